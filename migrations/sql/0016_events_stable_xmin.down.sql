DROP FUNCTION events_stable_xmin();

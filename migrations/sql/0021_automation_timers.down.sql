ALTER TABLE automation_firings DROP COLUMN trigger_window, DROP COLUMN trigger_kind;
DROP TABLE automation_streaks;
DROP TABLE automation_timers;

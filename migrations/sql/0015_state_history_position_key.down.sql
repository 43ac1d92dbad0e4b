ALTER TABLE state_history DROP CONSTRAINT state_history_pkey;
ALTER TABLE state_history ADD CONSTRAINT state_history_pkey PRIMARY KEY (stream_id, version);

DROP TABLE automation_delivery_attempts;
DROP TABLE automation_deliveries;
DROP TABLE automation_firings;
DROP TABLE automation_checkpoints;
DROP TABLE automations;

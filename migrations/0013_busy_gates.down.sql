ALTER TABLE nodes DROP COLUMN busy_gates;

-- Which delivery gates (a consumer's or an endpoint host's limits) each node
-- found busy lately: nodes share every limit by these (actors/src/limits.rs).
ALTER TABLE nodes ADD COLUMN busy_gates jsonb NOT NULL DEFAULT '[]';

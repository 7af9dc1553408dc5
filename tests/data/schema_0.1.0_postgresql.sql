-- The schema of cryoclust 0.1.0, made by SQLAlchemy's create_all before migrations existed
-- (PostgreSQL, with no alembic_version table). test_service_database.py upgrades a database made from it.

CREATE TABLE datasets (
	id VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	path VARCHAR(300) NOT NULL, 
	files JSON NOT NULL, 
	n_particles INTEGER NOT NULL, 
	box_size INTEGER NOT NULL, 
	pixel_size FLOAT NOT NULL, 
	mode INTEGER, 
	size_bytes BIGINT NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	has_ctf BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE workers (
	name VARCHAR(200) NOT NULL, 
	device VARCHAR(32) NOT NULL, 
	queue VARCHAR(200) NOT NULL, 
	job_id VARCHAR(32), 
	seen_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE jobs (
	id VARCHAR(32) NOT NULL, 
	dataset_id VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	params JSON NOT NULL, 
	round INTEGER NOT NULL, 
	round_num INTEGER NOT NULL, 
	rounds_done INTEGER NOT NULL, 
	progress FLOAT NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE, 
	finished_at TIMESTAMP WITH TIME ZONE, 
	heartbeat_at TIMESTAMP WITH TIME ZONE, 
	worker VARCHAR(200), 
	device VARCHAR(32), 
	error TEXT, 
	cancel_requested BOOLEAN NOT NULL, 
	attempts INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);

CREATE INDEX ix_jobs_dataset_id ON jobs (dataset_id);

CREATE INDEX ix_jobs_status ON jobs (status);

CREATE TABLE job_events (
	id BIGSERIAL NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	data JSON NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

CREATE INDEX ix_job_events_job_id ON job_events (job_id);

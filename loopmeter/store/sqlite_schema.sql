CREATE TABLE loopmeter_migrations (
	name VARCHAR(128) NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE usage (
	id INTEGER NOT NULL, 
	"key" VARCHAR(512) NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	agent VARCHAR(128), 
	provider VARCHAR(64), 
	model VARCHAR(256), 
	ts DATETIME NOT NULL, 
	session_id VARCHAR(256), 
	project TEXT, 
	user VARCHAR(128), 
	input_tokens BIGINT, 
	cache_read_tokens BIGINT, 
	cache_write_tokens BIGINT, 
	cache_write_1h_tokens BIGINT, 
	output_tokens BIGINT, 
	reasoning_tokens BIGINT, 
	cost_usd FLOAT, 
	cost_source VARCHAR(16) NOT NULL, 
	latency_ms FLOAT, 
	request_id VARCHAR(256), 
	run_id VARCHAR(32), 
	attempt_id VARCHAR(64), 
	price_table_sha256 VARCHAR(64), 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);
CREATE INDEX ix_usage_ts ON usage (ts);
CREATE TABLE usage_hour (
	hour VARCHAR(13) NOT NULL, 
	agent VARCHAR(128) NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	provider VARCHAR(64) NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	project TEXT NOT NULL, 
	user VARCHAR(128) NOT NULL, 
	cost_source VARCHAR(16) NOT NULL, 
	calls BIGINT NOT NULL, 
	unpriced BIGINT NOT NULL, 
	cost FLOAT NOT NULL, 
	input BIGINT NOT NULL, 
	cache_read BIGINT NOT NULL, 
	cache_write BIGINT NOT NULL, 
	output BIGINT NOT NULL, 
	reasoning BIGINT NOT NULL, 
	PRIMARY KEY (hour, agent, model, provider, source, project, user, cost_source)
);
CREATE TABLE run (
	id VARCHAR(32) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	task TEXT, 
	task_id VARCHAR(256), 
	suite VARCHAR(256), 
	repo TEXT, 
	base_commit VARCHAR(64), 
	user VARCHAR(128), 
	policy VARCHAR(256), 
	policy_sha256 VARCHAR(64), 
	status VARCHAR(16) NOT NULL, 
	winner_attempt_id VARCHAR(64), 
	config TEXT, 
	started_at DATETIME, 
	ended_at DATETIME, 
	active_s FLOAT, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_run_started ON run (started_at);
CREATE INDEX ix_run_kind ON run (kind);
CREATE TABLE attempt (
	id VARCHAR(64) NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	agent VARCHAR(128) NOT NULL, 
	model VARCHAR(256), 
	role VARCHAR(16) NOT NULL, 
	task_id VARCHAR(256), 
	epoch INTEGER, 
	user VARCHAR(128), 
	project TEXT, 
	worktree TEXT, 
	branch VARCHAR(256), 
	base_commit VARCHAR(64), 
	head_commit VARCHAR(64), 
	status VARCHAR(16) NOT NULL, 
	stop_reason TEXT, 
	error_kind VARCHAR(32), 
	iterations INTEGER NOT NULL, 
	wall_s FLOAT, 
	time_to_signal_s FLOAT, 
	time_to_green_s FLOAT, 
	iterations_to_green INTEGER, 
	diffstat TEXT, 
	input_tokens BIGINT, 
	cache_read_tokens BIGINT, 
	cache_write_tokens BIGINT, 
	output_tokens BIGINT, 
	reasoning_tokens BIGINT, 
	cost_usd FLOAT, 
	unpriced_calls INTEGER NOT NULL, 
	started_at DATETIME, 
	ended_at DATETIME, 
	applied_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_attempt_agent ON attempt (agent, model);
CREATE INDEX ix_attempt_started ON attempt (started_at);
CREATE INDEX ix_attempt_run ON attempt (run_id);
CREATE TABLE iteration (
	id INTEGER NOT NULL, 
	attempt_id VARCHAR(64) NOT NULL, 
	n INTEGER NOT NULL, 
	started_at DATETIME, 
	ended_at DATETIME, 
	act_exit INTEGER, 
	act_summary TEXT, 
	check_exit INTEGER, 
	check_passed BOOLEAN, 
	check_output_tail TEXT, 
	cost_usd FLOAT, 
	tokens INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_iteration_attempt_n UNIQUE (attempt_id, n)
);
CREATE TABLE span (
	id INTEGER NOT NULL, 
	trace_id VARCHAR(32) NOT NULL, 
	span_id VARCHAR(16) NOT NULL, 
	parent_span_id VARCHAR(16), 
	name VARCHAR(512) NOT NULL, 
	kind VARCHAR(16), 
	start_ns BIGINT NOT NULL, 
	end_ns BIGINT NOT NULL, 
	status VARCHAR(16), 
	attributes TEXT, 
	service VARCHAR(128), 
	run_id VARCHAR(32), 
	attempt_id VARCHAR(64), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_span_ids UNIQUE (trace_id, span_id)
);
CREATE INDEX ix_span_start ON span (start_ns);
CREATE INDEX ix_span_run ON span (run_id);
CREATE TABLE audit (
	seq INTEGER NOT NULL, 
	ts DATETIME NOT NULL, 
	sandbox_id VARCHAR(64), 
	run_id VARCHAR(32), 
	attempt_id VARCHAR(64), 
	actor VARCHAR(128), 
	layer VARCHAR(16) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	target TEXT, 
	decision VARCHAR(8) NOT NULL, 
	rule_id VARCHAR(128), 
	policy_sha256 VARCHAR(64), 
	detail TEXT, 
	prev VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq)
);
CREATE INDEX ix_audit_run ON audit (run_id);
CREATE INDEX ix_audit_decision ON audit (decision);
CREATE INDEX ix_audit_ts ON audit (ts);
CREATE TABLE eval_result (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	suite VARCHAR(256), 
	config VARCHAR(256) NOT NULL, 
	agent VARCHAR(128) NOT NULL, 
	model VARCHAR(256), 
	task_id VARCHAR(256) NOT NULL, 
	epoch INTEGER NOT NULL, 
	attempt_id VARCHAR(64), 
	passed BOOLEAN, 
	score FLOAT, 
	wall_s FLOAT, 
	latency_ms FLOAT, 
	input_tokens BIGINT, 
	cache_read_tokens BIGINT, 
	cache_write_tokens BIGINT, 
	output_tokens BIGINT, 
	reasoning_tokens BIGINT, 
	cost_usd FLOAT, 
	error_kind VARCHAR(64), 
	detail TEXT, 
	created_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_eval_cell UNIQUE (run_id, config, task_id, epoch)
);
CREATE INDEX ix_eval_run ON eval_result (run_id);
CREATE TABLE ingest_cursor (
	path VARCHAR(2048) NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	inode BIGINT, 
	size BIGINT, 
	"offset" BIGINT, 
	mtime FLOAT, 
	malformed_lines INTEGER NOT NULL, 
	state TEXT, 
	updated_at DATETIME, 
	PRIMARY KEY (path)
);
CREATE TABLE outcome (
	sha VARCHAR(64) NOT NULL, 
	run_id VARCHAR(32), 
	attempt_id VARCHAR(64), 
	repo TEXT, 
	branch VARCHAR(256), 
	committed_at DATETIME, 
	merged_at DATETIME, 
	PRIMARY KEY (sha)
);
CREATE INDEX ix_outcome_run ON outcome (run_id);
CREATE TABLE session (
	source VARCHAR(64) NOT NULL, 
	session_id VARCHAR(256) NOT NULL, 
	agent VARCHAR(128), 
	user VARCHAR(128), 
	cwd TEXT, 
	branch VARCHAR(256), 
	"commit" VARCHAR(64), 
	repo TEXT, 
	repo_url TEXT, 
	first_ts DATETIME, 
	last_ts DATETIME, 
	PRIMARY KEY (source, session_id)
);
CREATE INDEX ix_session_repo_branch ON session (repo, branch);
CREATE TABLE pull_request (
	repo VARCHAR(512) NOT NULL, 
	number INTEGER NOT NULL, 
	host VARCHAR(32) NOT NULL, 
	title TEXT, 
	branch VARCHAR(256), 
	base VARCHAR(256), 
	state VARCHAR(16) NOT NULL, 
	author VARCHAR(256), 
	author_is_bot BOOLEAN NOT NULL, 
	created_at DATETIME, 
	merged_at DATETIME, 
	closed_at DATETIME, 
	merge_sha VARCHAR(64), 
	first_review_at DATETIME, 
	changes_requested INTEGER NOT NULL, 
	commits_after_review INTEGER NOT NULL, 
	agents TEXT, 
	runs TEXT, 
	reverted_at DATETIME, 
	reverted_by VARCHAR(128), 
	updated_at DATETIME, 
	reverts INTEGER, 
	shas TEXT, 
	PRIMARY KEY (repo, number)
);
CREATE INDEX ix_pull_request_branch ON pull_request (repo, branch);
CREATE TABLE repo_commit (
	repo VARCHAR(512) NOT NULL, 
	sha VARCHAR(64) NOT NULL, 
	landed_at DATETIME, 
	authored_at DATETIME, 
	author VARCHAR(256), 
	agents TEXT, 
	run_id VARCHAR(32), 
	reverts VARCHAR(64), 
	pr_number INTEGER, 
	PRIMARY KEY (repo, sha)
);
CREATE TABLE sync_cursor (
	source VARCHAR(64) NOT NULL, 
	scope VARCHAR(512) NOT NULL, 
	cursor TEXT, 
	synced_at DATETIME, 
	rows INTEGER NOT NULL, 
	last_error TEXT, 
	last_error_at DATETIME, 
	PRIMARY KEY (source, scope)
);
CREATE TABLE vendor_usage (
	id INTEGER NOT NULL, 
	"key" VARCHAR(512) NOT NULL, 
	vendor VARCHAR(32) NOT NULL, 
	report VARCHAR(64) NOT NULL, 
	date VARCHAR(10) NOT NULL, 
	ts DATETIME, 
	tier VARCHAR(16) NOT NULL, 
	vendor_user VARCHAR(256), 
	user VARCHAR(128), 
	model VARCHAR(256), 
	cost_usd FLOAT, 
	credits FLOAT, 
	input_tokens BIGINT, 
	output_tokens BIGINT, 
	cache_read_tokens BIGINT, 
	cache_write_tokens BIGINT, 
	requests BIGINT, 
	extra TEXT, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);
CREATE INDEX ix_vendor_usage_date ON vendor_usage (date, vendor);
CREATE INDEX ix_usage_run ON usage (run_id, attempt_id) WHERE run_id IS NOT NULL;

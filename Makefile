# ablate: `make demo` and `make test` work on a fresh machine (they create .venv first).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TEAM    := $(VENV)/.installed-team
DEMO_DATA := data/synthetic_mars.npz

.PHONY: setup demo test test-fast bench bench-gpu bench-quality bench-storage lint ui clean-runs team-demo manifest

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The `team` extra (PostgreSQL driver, optuna-dashboard, MLflow's basic auth): the tests, the team
# demo and the storage benchmark use them; `make demo` does not.
$(TEAM): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,team]'
	touch $(TEAM)

$(DEMO_DATA): | $(STAMP)
	$(BIN)/ablate data synth --out $(DEMO_DATA) --n 1200 --n-test 200 --seed 0

# A small sequential ablation on the embedded synthetic data (ablations/demo.yaml): a skip change and a
# positive control that cannot learn, which must be found worse; plan first, then 3-5 seeds in rounds.
demo: $(STAMP) $(DEMO_DATA)
	$(BIN)/ablate data inspect $(DEMO_DATA)
	$(BIN)/ablate ablation plan ablations/demo.yaml --no-store
	$(BIN)/ablate ablation run ablations/demo.yaml

# Two processes, each taking whole test files (a file's fixtures are set up once); TEST_WORKERS=0 runs
# them in this process, one after another.
TEST_WORKERS ?= 2
test: $(TEAM)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# Ratios measured in one run on this machine; results in benchmarks/results/*.json.
bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/pruning.py
	$(BIN)/python benchmarks/workers.py
	$(BIN)/python benchmarks/sequential.py
	$(BIN)/python benchmarks/cli_latency.py
	$(BIN)/python benchmarks/campaign.py
	$(BIN)/python benchmarks/trial_cost.py

# Not in `make bench`. Training img/s for fp32, mixed precision and XLA, and trials per hour with 1 and
# 2 trials sharing the GPU (~8 min on an H200); without a GPU it says so in one line and measures nothing.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py

# Not in `make bench`. The plain U-Net and the Mars recipe at their presets' full budgets on the real
# data: best val mIoU, per-class IoU, s/epoch (hours on a CPU; results written after each model).
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

# Not in `make bench`. How many workers one PostgreSQL serves: no-op trials from 1, 2, 4, 8 and 16
# processes against fresh databases on the local server (trials/s, SQL statements per trial and per
# reported value, connections per worker), and MLflow requests per epoch of a run (~4 min on 2 cores).
bench-storage: $(TEAM)
	$(BIN)/python benchmarks/storage_scale.py
	$(BIN)/python benchmarks/tracking_requests.py

lint: $(STAMP)
	$(BIN)/ruff check core tests benchmarks

ui: $(STAMP)
	$(BIN)/ablate ui

# The team topology without Docker: local PostgreSQL, an MLflow server on it, 2 `ablate worker`s
# on a small ablation, then an audit of every trial and run. KEEP=1 leaves the UIs up until Ctrl-C.
team-demo: $(TEAM)
	$(BIN)/python deploy/team_demo.py --workers 2 $(if $(KEEP),--keep,)

# The registries' schemas, read by commands that check specs without importing TensorFlow
# (core/registry_manifest.json); rerun after adding or changing a block. The tests check it.
manifest: $(STAMP)
	$(BIN)/python -m ablate.manifest

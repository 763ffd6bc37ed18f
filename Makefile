# basisit — one command per level. `make test` is what CI runs (.ci/run).
VENV := .venv
BIN := $(VENV)/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup lint test unit lab-test lab help collection

help:
	@echo "make setup     Debian packages + .venv with pinned dependencies (idempotent)"
	@echo "make lint      ruff, yamllint, ansible-lint (production profile)"
	@echo "make unit      unit tests (no root, no lab)"
	@echo "make lab-test  lab integration tests (root; real systemd-nspawn hosts)"
	@echo "make test      setup + lint + every test (what CI runs)"
	@echo "make lab       setup + roll the model Kommunen out in the local lab and verify them"
	@echo "make collection  the Ansible collection egosaar.basisit and the basisit wheel in dist/ (docs/awx.md)"

setup:
	@bash scripts/setup.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production --offline -q

# --dist loadscope: a module's tests run on one worker, so its module-scoped fixtures (the wheel, a
# provisioned samba domain, one verify run, one converge) are built once, not once per worker.
unit: setup
	$(BIN)/pytest -m "not lab" -n 2 --dist loadscope tests/unit --durations=15

lab-test: setup
	$(BIN)/pytest -m lab tests/lab --durations=40

test: setup lint unit lab-test

# The Ansible collection egosaar.basisit (roles, plugins, playbooks) and the wheel its plugins
# import, both into dist/ — what execution-environment.yml installs. Tested by tests/unit/test_wheel.py.
collection: setup
	$(BIN)/python scripts/build_collection.py --out dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .

# The main job: the four model Kommunen and zentral, from nothing to verified, in the local lab.
# The dashboard is written even when a Kommune fails: it shows what failed.
STATE_DIR := $(or $(BASISIT_STATE),$(CURDIR)/.basisit)
lab: setup
	@$(BIN)/basisit rollout --wave modell --backend lab; rc=$$?; \
	  echo "dashboard: file://$(STATE_DIR)/reports/dashboard/index.html"; exit $$rc

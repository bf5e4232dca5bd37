# llmops.vllm — set-up, demo, tests, lint and benchmarks. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COLLECTIONS := $(CURDIR)/.build/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/llmops/vllm
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := true
export ANSIBLE_LOCALHOST_WARNING := false
export ANSIBLE_INVENTORY_UNPARSED_WARNING := false
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The local control plane by default; kind when a Docker engine answers (override: CLUSTER_KIND=local|kind).
CLUSTER_KIND ?= $(shell docker info >/dev/null 2>&1 && echo kind || echo local)
CLUSTER := bash tests/cluster/$(if $(filter kind,$(CLUSTER_KIND)),kind,cluster).sh
PYTEST_ARGS ?=

.PHONY: help venv collection cluster-build cluster-up cluster-down cluster-env cluster-status demo test \
        test-unit test-integration lint build clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/ansible-playbook: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

venv: $(BIN)/ansible-playbook ## create .venv with ansible 12 (kubernetes.core), test and lint tools

collection: ## link this checkout as ansible_collections/llmops/vllm for ansible and the tests
	@mkdir -p $(dir $(COLLECTION_LINK))
	@[ -e $(COLLECTION_LINK) ] || ln -s $(CURDIR) $(COLLECTION_LINK)

cluster-build: ## build the local control plane binaries and fetch its add-ons (first time: tens of minutes on 2 cores)
	@bash tests/cluster/build.sh
	@bash tests/cluster/addons.sh
	@bash tests/cluster/node.sh setup

cluster-up: ## start the local control plane (etcd, apiserver, controller-manager, scheduler, kwok nodes)
	@$(CLUSTER) up

cluster-down: ## stop the local control plane; no process is left behind
	@$(CLUSTER) down

cluster-env: ## print `export KUBECONFIG=...` for the local control plane
	@$(CLUSTER) env

cluster-status: ## show which control plane components run
	@$(CLUSTER) status

demo: venv collection cluster-up ## set everything up and deploy the reference model onto the local cluster's real node
	@eval "$$($(CLUSTER) env)"; \
	$(BIN)/ansible-playbook playbooks/deploy.yml -e @tests/cluster/local-vars.yml -e vllm_namespace=demo
	@echo "demo: objects in namespace demo; $$($(CLUSTER) env)"

test: venv collection ## the whole suite: ansible-test sanity + units, ansible-lint, pytest (real API server, galaxy), molecule
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory units
	$(MAKE) --no-print-directory ansible-lint
	@# tests/unit just ran under ansible-test units; pytest runs the rest (API server, Galaxy, docs).
	@# pytest exits 5 when it collects nothing: say so plainly instead of failing with a bare status.
	@$(BIN)/pytest tests --ignore=tests/unit $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; elif [ $$rc -ne 0 ]; then exit $$rc; fi
	$(MAKE) --no-print-directory molecule

test-unit: venv collection ## unit tests only, with plain pytest (no cluster; `make units` runs them under ansible-test)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: venv collection ## tests against the real API server
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: venv ## ruff on Python
	$(BIN)/ruff check plugins tests bench
	$(BIN)/ruff format --check plugins tests bench

build: venv ## build the collection tarball
	$(BIN)/ansible-galaxy collection build --force --output-path .build

clean: ## remove build output (not the cached control plane binaries)
	rm -rf .build .pytest_cache

# --- Collection quality: ansible-test, ansible-lint, molecule, Galaxy, execution environment, docs ---------
.PHONY: sanity units ansible-lint molecule galaxy-check ee-create docs helm
ANSIBLE_TEST_ARGS ?=

sanity: venv ## ansible-test sanity (validate-modules, pep8, pylint, import, yamllint, ...) from an ansible_collections/ copy
	bash tests/ansible_test.sh sanity $(ANSIBLE_TEST_ARGS)

units: venv ## ansible-test units over tests/unit (no cluster), from the same kind of copy
	bash tests/ansible_test.sh units $(ANSIBLE_TEST_ARGS)

ansible-lint: venv collection ## ansible-lint, production profile (.ansible-lint), over roles, playbooks, molecule, meta
	$(BIN)/ansible-lint

MOLECULE_SCENARIOS ?= default multi_model real_node
molecule: venv collection ## molecule scenarios default, multi_model and real_node (local control plane; kind where Docker answers)
	@for s in $(MOLECULE_SCENARIOS); do \
	  if [ "$$s" = real_node ] && ! why=$$(bash tests/cluster/node.sh available 2>&1); then \
	    echo "molecule: scenario real_node skipped: $$why"; continue; fi; \
	  echo "molecule: scenario $$s"; \
	  CLUSTER_KIND=$(CLUSTER_KIND) $(BIN)/molecule test -s $$s || exit $$?; \
	done

galaxy-check: venv collection ## build the tarball, install it into a fresh path, ansible-doc every module, run from it
	$(BIN)/pytest tests/integration/test_collection.py $(PYTEST_ARGS)

ee-create: venv ## ansible-builder create: the execution environment's build context in .build/ee/context
	rm -rf .build/ee && mkdir -p .build/ee
	$(BIN)/ansible-galaxy collection build --output-path .build/ee >/dev/null
	mv .build/ee/llmops-vllm-*.tar.gz .build/ee/llmops-vllm.tar.gz
	$(BIN)/ansible-builder create -f execution-environment.yml -c .build/ee/context --output-filename Containerfile

docs: venv ## regenerate docs/roles.md (argument specs), docs/vllm-versions.md (vLLM catalogues), docs/reasons.md
	$(BIN)/python docs/gen_role_docs.py
	$(BIN)/python docs/gen_vllm_versions.py
	$(BIN)/python docs/gen_reasons.py

# --- vLLM releases: the engine-argument catalogue the preflight checks against --------------------------------
.PHONY: vllm-catalogue
VLLM ?=
vllm-catalogue: venv ## add or refresh one vLLM release's catalogue: make vllm-catalogue VLLM=0.34.0
	@[ -n "$(VLLM)" ] || { echo "usage: make vllm-catalogue VLLM=<version>"; exit 2; }
	$(BIN)/python tools/vllm_catalogue.py $(VLLM)
	$(BIN)/python docs/gen_vllm_versions.py
	$(BIN)/python docs/gen_reasons.py

# --- Benchmarks (not tests): ratios against kubectl and cp -r, measured in one run -------------------------
.PHONY: bench
bench: venv collection cluster-up ## deploy vs kubectl (1/5/10/20 models), staging vs cp -r, rollouts under load; writes bench/out/
	$(BIN)/python bench/deploy_bench.py --reps 3
	$(BIN)/python bench/stage_bench.py --size-gb 1 --reps 3 --json bench/out/stage.json
	$(BIN)/python bench/fleet_bench.py --reps 3
	$(BIN)/python bench/rollout_bench.py

helm: ## build helm once from the Go module proxy (make bench then adds Helm columns)
	bash bench/helm.sh

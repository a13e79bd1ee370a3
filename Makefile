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

.PHONY: all venv eda-venv link awx-collection test pytest units integration lint sanity docs release matrix demo bench build ee-context ee clean
# ansible-core releases the matrix proves besides the main venv's (2.19 on Python 3.11, in tests/requirements.txt):
# 2.16 (what Automation Platform 2.5/2.6 execution environments ship), 2.18, and the maintained 2.20 and 2.21, which
# need Python >= 3.12 on the controller (tests/python.sh finds one, or builds 3.13 once into ~/.cache).
MATRIX := 2.16.19 2.18.19 2.20.10@3.12 2.21.5@3.13
# Pre-releases: run and reported, never failing make test.
MATRIX_PREVIEW := 2.22.0rc1@3.13

all: test

$(STAMP): tests/requirements.txt requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt -r requirements.txt
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

$(EDA_STAMP): requirements.txt tests/requirements.txt
	command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	rm -rf $(EDA_VENV)
	$(PYTHON) -m venv $(EDA_VENV)
	$(EDA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check ansible-rulebook==1.3.2 \
		$$(grep -E '^(ansible-core|ansible-runner|requests|urllib3|PyYAML)==' tests/requirements.txt) -r requirements.txt
	touch $@

eda-venv: $(EDA_STAMP)

## test: everything CI runs
test: venv link pytest units integration lint sanity docs release matrix

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

# ansible-test skips its shellcheck test (with only a warning) when the program is missing: install it (CI runs as root).
sanity: venv
	command -v shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck; }
	tests/ansible_test.sh sanity

docs: venv link
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs .

# galaxy-importer on the built tarball, the tarball installs and documents itself, the changelog builds.
release: venv link
	tests/release_checks.sh

matrix: link
	for version in $(MATRIX); do tests/matrix.sh $$version || exit 1; done
	for version in $(MATRIX_PREVIEW); do tests/matrix.sh $$version || echo "== PREVIEW $$version FAILED (a pre-release: reported, not failing make test)"; done

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

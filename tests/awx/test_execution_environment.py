# -*- coding: utf-8 -*-
"""The execution environment definition (extensions/ee/) makes a build context that installs this collection and requests.

Building the image needs a container engine, which this machine lacks. What can be checked without one is the build
context (`ansible-builder create`) and the two stages that matter to us, replayed here with the context's own files:
the galaxy stage (ansible-galaxy installs the collection from the tarball, as the Containerfile runs it in /build)
and the introspection of the builder stage (which Python requirements of the installed collections the image gets).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tarfile

import yaml

from tests.conftest import BIN, ROOT, ansible_env

EE = ROOT / 'extensions' / 'ee'
VERSION = yaml.safe_load((ROOT / 'galaxy.yml').read_text())['version']
TARBALL = 'mailsec-sendgrid-%s.tar.gz' % VERSION


def _run(*args, cwd=None, env=None):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env or ansible_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, '%s\n%s%s' % (' '.join(str(a) for a in args), proc.stdout, proc.stderr)
    return proc.stdout


def _collection_requirements():
    """The Python requirements the collection declares for execution environments (meta/execution-environment.yml)."""
    meta = yaml.safe_load((ROOT / 'meta' / 'execution-environment.yml').read_text())
    lines = (ROOT / meta['dependencies']['python']).read_text().splitlines()
    return [line.split('#', 1)[0].strip() for line in lines if line.split('#', 1)[0].strip()]


def test_build_context_installs_the_collection_and_its_python_requirements(tmp_path):
    assert (BIN / 'ansible-builder').exists(), 'ansible-builder is missing from the venv (see the Makefile)'
    # The repository's layout, in miniature: the EE definition and the tarball where `make build` puts it.
    root = tmp_path / 'root'
    shutil.copytree(EE, root / 'extensions' / 'ee')
    dist = root / '.tmp' / 'dist'
    _run(BIN / 'ansible-galaxy', 'collection', 'build', ROOT, '--output-path', dist)
    assert [p.name for p in dist.iterdir()] == [TARBALL]

    with tarfile.open(dist / TARBALL) as tar:
        members = tar.getnames()
    # galaxy.yml's build_ignore keeps the developer's environment and state out of what the image installs.
    for ignored in ('.venv/', '.tmp/', '.git/', '.pytest_cache/', '.hypothesis/', 'tests/output/'):
        assert not [m for m in members if m.startswith(ignored)], ignored
    assert not [m for m in members if m.endswith('.tar.gz')]
    for needed in ('MANIFEST.json', 'meta/execution-environment.yml', 'requirements.txt', 'plugins/action/enforced_tls_fleet.py',
                   'plugins/inventory/subusers.py', 'roles/enforced_tls_policy/tasks/main.yml', 'playbooks/enforce.yml'):
        assert needed in members, needed

    context = tmp_path / 'context'
    _run(BIN / 'ansible-builder', 'create', '-f', root / 'extensions' / 'ee' / 'execution-environment.yml', '--context', context,
         '--output-filename', 'Containerfile')
    build = context / '_build'
    # The tarball, unchanged, and a galaxy requirements file naming it.
    assert filecmp.cmp(build / 'collections' / TARBALL, dist / TARBALL, shallow=False)
    requirements = yaml.safe_load((build / 'requirements.yml').read_text())
    assert requirements['collections'] == [dict(name='collections/' + TARBALL, type='file')], (
        'extensions/ee/requirements.yml must name the tarball of galaxy.yml version %s' % VERSION)

    containerfile = (context / 'Containerfile').read_text()
    definition = yaml.safe_load((EE / 'execution-environment.yml').read_text())
    assert 'ARG EE_BASE_IMAGE="%s"' % definition['images']['base_image']['name'] in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==' in containerfile and ' ansible-runner==' in containerfile
    # The galaxy stage installs from /build (the context's _build), where the requirements file's relative path points.
    galaxy_stage = containerfile.split('FROM base AS galaxy', 1)[1].split('FROM base AS builder', 1)[0]
    assert 'COPY _build /build\nWORKDIR /build' in galaxy_stage
    assert 'ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml' in galaxy_stage
    # The builder stage collects the installed collections' Python requirements; the final stage installs them.
    builder_stage = containerfile.split('FROM base AS builder', 1)[1].split('FROM base AS final', 1)[0]
    assert 'introspect.py introspect' in builder_stage and '--write-pip=/tmp/src/requirements.txt' in builder_stage
    assert 'RUN /output/scripts/assemble' in builder_stage
    assert 'RUN /output/scripts/install-from-bindep' in containerfile.split('FROM base AS final', 1)[1]

    # Replay the galaxy stage: from /build (here: the context's _build), offline, into a collections path.
    collections = tmp_path / 'usr-share-ansible' / 'collections'
    env = ansible_env(ANSIBLE_GALAXY_DISABLE_GPG_VERIFY='1', ANSIBLE_COLLECTIONS_PATH=str(collections))
    _run(BIN / 'ansible-galaxy', 'collection', 'install', '-r', 'requirements.yml', '--collections-path', collections, cwd=build, env=env)
    installed = collections / 'ansible_collections' / 'mailsec' / 'sendgrid'
    assert (installed / 'plugins' / 'action' / 'enforced_tls_fleet.py').is_file()
    # Replay the introspection with the context's own script: the collection's requests requirement reaches the image.
    pip_file = tmp_path / 'introspected-requirements.txt'
    _run(sys.executable, build / 'scripts' / 'introspect.py', 'introspect', collections, '--write-pip', pip_file,
         '--write-bindep', tmp_path / 'bindep.txt')
    introspected = pip_file.read_text().splitlines()
    expected = _collection_requirements()
    assert any(line.startswith('requests') for line in expected)
    for requirement in expected:
        assert '%s  # from collection mailsec.sendgrid' % requirement in introspected, introspected


def test_definition_says_a_container_engine_is_needed():
    text = (EE / 'execution-environment.yml').read_text()
    assert 'container engine' in text
    assert yaml.safe_load(text)['version'] == 3

# libvirt-exporter: `make demo` runs the service on a demo host, `make test`
# runs the whole suite, `make deb` builds the Debian package.  They install
# what they need on a fresh Debian machine (apt-get as root, then a .venv with
# the project for demo and test).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo's HTTP and SNMP addresses (make demo DEMO_ADDRESS=127.0.0.1:29177 DEMO_SNMP_ADDRESS=127.0.0.1:29161),
# and where it keeps its private copy of the configuration and its state.
DEMO_ADDRESS ?= 127.0.0.1:9177
DEMO_SNMP_ADDRESS ?= 127.0.0.1:1161
DEMO_DIR ?= $(CURDIR)/build/demo
DEMO_STATE ?= $(CURDIR)/build/demo-state
DEMO_MIBS = -M $(CURDIR)/$(BASE_MIBS):$(CURDIR)/mibs -m LIBVIRT-EXPORTER-MIB:LIBVIRT-MIB:SNMPv2-MIB

# Debian packages: the build of libvirt-python, the real hypervisor tier
# (libvirtd, virtlogd, QEMU), the SNMP and Prometheus tools the tests use (snmp_exporter reads our agent
# with prometheus/snmp.yml; OpenSSH carries libvirt's +ssh transport to a private sshd on a loopback port),
# the Zabbix tier's server, frontend (its API under php -S), PostgreSQL and snmptrapd's Perl module for
# the trap receiver (tests/test_zabbix_server.py), and the .deb's build (debhelper, dh-virtualenv), check
# (lintian) and installation test in a fresh chroot (mmdebstrap).
APT_PACKAGES := gcc pkg-config python3-dev python3-venv libvirt-dev \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients \
	qemu-system-x86 qemu-utils iproute2 curl \
	snmp snmpd snmptrapd smitools monitoring-plugins-standard systemd bindfs \
	prometheus prometheus-snmp-exporter openssh-client openssh-server chromium \
	zabbix-server-pgsql zabbix-frontend-php php-cli php-pgsql postgresql libsnmp-perl \
	debhelper dh-virtualenv dpkg-dev lintian mmdebstrap

# Real texts of the base MIBs (SNMPv2-SMI, -TC, -CONF, -MIB, IF-MIB), which
# Debian main lacks, come from the npm package net-snmp: fetched, never run.
BASE_MIBS := build/base-mibs
NET_SNMP_NPM := net-snmp@3.29.2
# kumina's exporter (Debian's prometheus-libvirt-exporter), the benchmark's peer: unpacked
# into build/, not installed, so that no service of it starts and takes port 9177.
KUMINA := build/kumina/usr/bin/prometheus-libvirt-exporter

.PHONY: demo demo-control test test-busy bench load system-deps venv base-mibs deb deb-chroot clean

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "error: run as root to apt-get install: $$missing" >&2; exit 1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: system-deps $(BIN)/.installed

$(BASE_MIBS)/SNMPv2-SMI: | system-deps
	@command -v npm >/dev/null || { echo "installing npm (for the base MIB texts)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; }; }
	rm -rf build/npm-pack && mkdir -p build/npm-pack $(BASE_MIBS)
	cd build/npm-pack && npm pack --silent $(NET_SNMP_NPM) >/dev/null && tar xzf net-snmp-*.tgz
	for f in build/npm-pack/package/lib/mibs/*.mib; do cp $$f $(BASE_MIBS)/$$(basename $$f .mib); done
	rm -rf build/npm-pack
	test -s $(BASE_MIBS)/SNMPv2-SMI

base-mibs: $(BASE_MIBS)/SNMPv2-SMI

# $(call run-demo,CONFIG[,HINT]): the exporter on the demo host with CONFIG, at the DEMO_ addresses, hints first.
# A config file holding SNMP communities must not be readable by others: the demo runs a private copy.
define run-demo
	@echo
	@echo "libvirt-exporter demo on libvirt's test driver (examples/demo-host.xml), configured by $(1)."
	@echo "Try:  curl http://$(DEMO_ADDRESS)/metrics"
	@echo "      snmpwalk -v2c -c public $(DEMO_MIBS) $(DEMO_SNMP_ADDRESS) .1.3.6.1"
	$(if $(2),@echo "      $(2)")
	@echo
	install -D -m 600 $(1) $(DEMO_DIR)/$(notdir $(1))
	$(BIN)/libvirt-exporter --config.file $(DEMO_DIR)/$(notdir $(1)) \
		--libvirt.uri test://$(CURDIR)/examples/demo-host.xml --state.directory $(DEMO_STATE) \
		--web.listen-address $(DEMO_ADDRESS) --snmp.listen-address $(DEMO_SNMP_ADDRESS)
endef

demo: venv base-mibs
	$(call run-demo,examples/demo.toml)

# The demo with lifecycle control on: the user operator may write (README, "Controlling domains with snmpset").
demo-control: venv base-mibs
	$(call run-demo,examples/control.toml,snmpset -v3 -l authPriv -u operator -a SHA-256 -A operator-auth-key -x AES -X operator-priv-key $(DEMO_MIBS) $(DEMO_SNMP_ADDRESS) lvxDomainAdminState.5 i paused)

test: venv base-mibs $(KUMINA) deb-chroot
	$(BIN)/python -m pytest

# The whole suite on a busy machine: two CPU hogs (stress-ng --cpu 2) run for as long as it does.
test-busy: venv base-mibs $(KUMINA) deb-chroot
	@command -v stress-ng >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends stress-ng; } || { echo "error: stress-ng is needed" >&2; exit 1; }
	stress-ng --cpu 2 --quiet & hogs=$$!; trap 'kill $$hogs 2>/dev/null; wait $$hogs 2>/dev/null' EXIT; \
		$(BIN)/python -m pytest

$(KUMINA): | system-deps
	rm -rf build/kumina-deb && mkdir -p build/kumina-deb
	cd build/kumina-deb && { apt-get download -q prometheus-libvirt-exporter || \
		{ apt-get update -q && apt-get download -q prometheus-libvirt-exporter; }; }
	dpkg-deb -x build/kumina-deb/prometheus-libvirt-exporter_*.deb build/kumina
	rm -rf build/kumina-deb
	test -x $@

# The full benchmark (several minutes); matplotlib is needed only here, for the plots.
# bench/stuck.py: one frozen QEMU among real TCG domains, ours against kumina's (bench/STUCK.md).
# bench/notify.py: traps and informs per second per target to a real snmptrapd, ours against the old path (bench/NOTIFY.md).
bench: venv base-mibs $(KUMINA)
	$(BIN)/pip install -q matplotlib
	$(BIN)/python bench/run.py --out bench
	$(BIN)/python bench/stuck.py --out bench
	$(BIN)/python bench/notify.py --out bench

# The full load tests: 60 s of 20 scrapers and 4 bulk walkers on 1000 domains (bench/LOAD.md, bench/load.png),
# then 10 minutes of lifecycle churn at 300 and at 1000 domains behind a private libvirtd, with a trap and an
# inform target (bench/CHURN.md, bench/churn.png; about 25 minutes).
load: venv base-mibs
	$(BIN)/pip install -q matplotlib
	$(BIN)/python bench/load.py --out bench
	$(BIN)/python bench/churn.py --out bench

# The Debian package (debian/, README "Installing"): dpkg-buildpackage in a copy of what the build needs,
# below build-deb/, with the base MIB texts added; the .deb lands in build-deb/.  Its version is
# debian/changelog's, which must be the project's (exporter/__init__.py): add a changelog entry with it.
DEB_DIR := build-deb
DEB_VERSION = $(shell sed -n '1{s/^[^ ]* .//;s/. .*//;p}' debian/changelog)
PROJECT_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' exporter/__init__.py)
DEB = $(DEB_DIR)/libvirt-exporter_$(DEB_VERSION)_$(shell dpkg --print-architecture).deb
DEB_TREE := pyproject.toml README.md MANIFEST.in exporter mibs systemd man debian
DEB_BASE_MIBS := SNMPv2-SMI SNMPv2-TC SNMPv2-CONF SNMPv2-MIB

# The package, and the fresh Debian 12 chroot tests/test_deb.py installs it into (mmdebstrap, from Debian's
# archive): made here, before the suite runs, so that no test downloads anything.
deb-chroot: deb venv
	$(BIN)/python -m tests.support.debchroot $(DEB)

deb: system-deps base-mibs
	@test "$(DEB_VERSION)" = "$(PROJECT_VERSION)" || { echo "error: debian/changelog says $(DEB_VERSION)," \
		"exporter/__init__.py $(PROJECT_VERSION): add a changelog entry (dch -v $(PROJECT_VERSION))" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(DEB)

$(DEB): $(shell find $(DEB_TREE) -type f -not -path '*/__pycache__/*' 2>/dev/null) $(BASE_MIBS)/SNMPv2-SMI
	rm -rf $(DEB_DIR)/src && mkdir -p $(DEB_DIR)/src/libvirt-exporter/debian/base-mibs
	tar -c --exclude=__pycache__ $(DEB_TREE) | tar -x -C $(DEB_DIR)/src/libvirt-exporter
	cp $(addprefix $(BASE_MIBS)/,$(DEB_BASE_MIBS)) $(DEB_DIR)/src/libvirt-exporter/debian/base-mibs/
	cd $(DEB_DIR)/src/libvirt-exporter && DEB_PIP_CACHE=$(CURDIR)/$(DEB_DIR)/pip-cache dpkg-buildpackage -b --no-sign
	mv $(DEB_DIR)/src/$(notdir $@) $@
	rm -rf $(DEB_DIR)/src

clean:
	rm -rf $(VENV) .pytest_cache build build-deb *.egg-info

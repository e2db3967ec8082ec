# libvirt-exporter: `make demo` runs the service on a demo host, `make test`
# runs the whole suite.  Both install what they need on a fresh Debian machine
# (apt-get as root, then a .venv with the project).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ADDRESS ?= 127.0.0.1:9177

# Debian packages: the build of libvirt-python, the real hypervisor tier
# (libvirtd, virtlogd, QEMU), the SNMP and Prometheus tools the tests use.
APT_PACKAGES := gcc pkg-config python3-dev python3-venv libvirt-dev \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients \
	qemu-system-x86 qemu-utils iproute2 curl \
	snmp snmpd snmptrapd smitools monitoring-plugins-standard \
	prometheus

.PHONY: demo test system-deps venv clean

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

demo: venv
	@echo
	@echo "libvirt-exporter demo on libvirt's test driver (examples/demo-host.xml)."
	@echo "Try:  curl http://$(DEMO_ADDRESS)/metrics"
	@echo
	$(BIN)/libvirt-exporter --libvirt.uri test://$(CURDIR)/examples/demo-host.xml \
		--web.listen-address $(DEMO_ADDRESS) --libvirt.poll-interval 5s

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

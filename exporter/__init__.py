"""libvirt-exporter: libvirt host metrics for Prometheus and SNMP."""

__version__ = "0.1.0"

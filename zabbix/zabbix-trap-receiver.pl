# Receives SNMP notifications for Zabbix: a handler for snmptrapd's embedded Perl that appends each
# trap to the file Zabbix's SNMP trapper reads (SNMPTrapperFile in zabbix_server.conf, with
# StartSNMPTrapper=1).  Each record starts with a line "TIME ZBXTRAP ADDRESS", ADDRESS being the
# sender's IP, which Zabbix matches against its hosts' SNMP interfaces; the rest (the PDU's details
# and its varbinds) becomes the value of the host's snmptrap[...] or snmptrap.fallback item.
# Communities are left out of the file.
#
# Debian's Zabbix packages do not ship Zabbix's own zabbix_trap_receiver.pl; this one needs
# snmptrapd and libsnmp-perl (NetSNMP::TrapReceiver).  In snmptrapd.conf:
#
#   perl $zabbix_trap_file = "/var/lib/zabbix/snmptraps.log";
#   perl do "/path/to/zabbix-trap-receiver.pl";
#
# and authorize the senders (authCommunity log,execute,net COMMUNITY; or createUser for SNMPv3).
use strict;
use warnings;
use Fcntl qw(:flock);
use NetSNMP::TrapReceiver;
use POSIX qw(strftime);

our $zabbix_trap_file;
die "zabbix-trap-receiver.pl: set \$zabbix_trap_file first\n" unless defined $zabbix_trap_file;

sub zabbix_record {
    my ($pdu, $varbinds) = @_;
    # receivedfrom reads like "UDP: [127.0.0.1]:40000->[127.0.0.1]:162"; the sender comes first.
    my ($sender) = ($pdu->{receivedfrom} // '') =~ /\[([^\]]+)\]/;
    $sender //= '0.0.0.0';
    my $text = strftime('%Y-%m-%dT%H:%M:%S', localtime) . " ZBXTRAP $sender\n";
    $text .= "PDU INFO:\n";
    foreach my $key (sort keys %$pdu) {
        next if $key eq 'community';  # a secret: it stays out of the file and of Zabbix's history
        $text .= sprintf("  %-20s %s\n", $key, $pdu->{$key} // '');
    }
    $text .= "VARBINDS:\n";
    foreach my $vb (@$varbinds) {
        $text .= sprintf("  %s type=%s value=%s\n", $vb->[0], $vb->[2], $vb->[1]);
    }
    open(my $out, '>>', $zabbix_trap_file) or die "cannot open $zabbix_trap_file: $!";
    flock($out, LOCK_EX);
    print $out $text;
    close($out);
    return NETSNMPTRAPD_HANDLER_OK;
}

NetSNMP::TrapReceiver::register('all', \&zabbix_record)
    or die "zabbix-trap-receiver.pl: cannot register the handler\n";

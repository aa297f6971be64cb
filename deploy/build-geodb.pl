#!/usr/bin/perl
# Builds leadloop's bundled country database from tor-geoipdb.
#
#   perl deploy/build-geodb.pl GEOIP GEOIP6 OUT.mmdb
#   perl deploy/build-geodb.pl --fixture OUT_CITY.mmdb OUT_ASN.mmdb
#
# GEOIP holds "start,end,CC" with IPv4 addresses as integers, GEOIP6 "start,end,CC" with IPv6
# text (Debian: /usr/share/tor/geoip, /usr/share/tor/geoip6). The data is the IPFire Location
# database converted by Tor's geoip-db-tool, licensed CC BY-SA 4.0: anything that ships the
# output must credit IPFire. The output has the GeoIP2-Country layout
# ({country => {iso_code => 'DE'}}), so a configured GeoIP2/GeoLite2 database can replace it.
#
# "??" means unknown; "EU" and "AP" are regions, not countries, and "ZZ" is CLDR's unknown
# region: all are skipped, so lookups there find nothing rather than a wrong country. A few
# registry entries say "UK", which ISO 3166 reserves for GB: they are stored as GB. The file is written to OUT.tmp and
# renamed, so a reader never sees half a database.
#
# --fixture writes a tiny GeoIP2-City and a GeoLite2-ASN database for the unit tests (the
# networks are documentation ranges, which the writer would otherwise drop as reserved).
use strict;
use warnings;

use MaxMind::DB::Writer::Tree;
use Net::Works::Address;
use Net::Works::Network;
use Time::HiRes qw(time);

my %types = (
    country                        => 'map',
    subdivisions                   => [ 'array', 'map' ],
    city                           => 'map',
    location                       => 'map',
    names                          => 'map',
    iso_code                       => 'utf8_string',
    en                             => 'utf8_string',
    time_zone                      => 'utf8_string',
    autonomous_system_number       => 'uint32',
    autonomous_system_organization => 'utf8_string',
);

sub new_tree {
    my ( $type, $description, %extra ) = @_;
    return MaxMind::DB::Writer::Tree->new(
        database_type         => $type,
        description           => { en => $description },
        languages             => ['en'],
        ip_version            => 6,
        record_size           => 24,
        alias_ipv6_to_ipv4    => 1,
        map_key_type_callback => sub {
            my $t = $types{ $_[0] };
            die "build-geodb: no MMDB type for key '$_[0]'\n" unless defined $t;
            return $t;
        },
        %extra,
    );
}

# Writes the tree to OUT.tmp, then renames it over OUT.
sub write_atomic {
    my ( $tree, $out ) = @_;
    my $tmp = "$out.tmp";
    my $ok = eval {
        open my $fh, '>:raw', $tmp or die "build-geodb: $tmp: $!\n";
        $tree->write_tree($fh);
        close $fh or die "build-geodb: $tmp: $!\n";
        rename $tmp, $out or die "build-geodb: rename $tmp -> $out: $!\n";
        1;
    };
    if ( !$ok ) {
        my $e = $@;
        unlink $tmp;
        die $e;
    }
    return -s $out;
}

sub usage {
    die "usage: perl deploy/build-geodb.pl GEOIP GEOIP6 OUT.mmdb\n"
        . "       perl deploy/build-geodb.pl --fixture OUT_CITY.mmdb OUT_ASN.mmdb\n";
}

sub build_fixtures {
    my ( $city_out, $asn_out ) = @_;
    my $city = new_tree( 'GeoIP2-City', 'leadloop test fixture', remove_reserved_networks => 0 );
    $city->insert_network(
        '198.51.100.0/24',
        {   country      => { iso_code => 'US' },
            subdivisions => [ { iso_code => 'CA' } ],
            city         => { names => { en => 'San Francisco' } },
            location     => { time_zone => 'America/Los_Angeles' },
        }
    );
    $city->insert_network(
        '2001:db8::/32',
        {   country      => { iso_code => 'DE' },
            subdivisions => [ { iso_code => 'BE' } ],
            city         => { names => { en => 'Berlin' } },
            location     => { time_zone => 'Europe/Berlin' },
        }
    );
    # Longer than ll_geo_t's fields, multibyte, and a country code that is not one: the
    # reader must cut on a character boundary and drop the code.
    $city->insert_network(
        '192.0.2.0/24',
        {   country      => { iso_code => 'DEU' },
            subdivisions => [ { iso_code => 'REGION-CODE-TOO-LONG' } ],
            city         => { names => { en => "\x{c4}" x 40 } },
            location     => { time_zone => 'Area/' . ( 'z' x 60 ) },
        }
    );
    # Deliberately disagrees with the country database (8.8.8.8 is US there), so the test can
    # see that a configured country database wins over the City one.
    $city->insert_network(
        '8.8.8.0/24',
        {   country => { iso_code => 'CA' },
            city    => { names    => { en => 'Toronto' } },
        }
    );
    write_atomic( $city, $city_out );

    my $asn = new_tree( 'GeoLite2-ASN', 'leadloop test fixture', remove_reserved_networks => 0 );
    $asn->insert_network(
        '198.51.100.0/24',
        {   autonomous_system_number       => 64500,
            autonomous_system_organization => 'Example Net',
        }
    );
    $asn->insert_network(
        '192.0.2.0/24',
        {   autonomous_system_number       => 4200000000,
            autonomous_system_organization => 'x' x 200,
        }
    );
    write_atomic( $asn, $asn_out );
    print STDERR "build-geodb: wrote fixtures $city_out, $asn_out\n";
    return 0;
}

# alias_ipv6_to_ipv4 makes the writer die on inserts into these; tor's geoip6 has entries
# for some of them (2002::/16), and they are IPv4 space anyway.
my @aliased = map { Net::Works::Network->new_from_string( string => $_ ) }
    qw(::ffff:0:0/96 2001::/32 2002::/16);

sub overlaps_alias {
    my ( $first, $last ) = @_;
    my $a = Net::Works::Address->new_from_string( string => $first, version => 6 )->as_integer;
    my $b = Net::Works::Address->new_from_string( string => $last,  version => 6 )->as_integer;
    for my $n (@aliased) {
        return 1 if $a <= $n->last_as_integer && $b >= $n->first_as_integer;
    }
    return 0;
}

my %not_country = map { $_ => 1 } qw(?? EU AP ZZ);

sub int_to_v4 {
    my $n = shift;
    return join '.', ( $n >> 24 ) & 255, ( $n >> 16 ) & 255, ( $n >> 8 ) & 255, $n & 255;
}

sub build_country {
    my ( $geoip, $geoip6, $out ) = @_;
    my $t0   = time;
    my $tree = new_tree( 'GeoIP2-Country',
        'leadloop country database from tor-geoipdb (IPFire Location data, CC BY-SA 4.0)' );
    my %data;    # one hash per country: the writer dedups identical records anyway
    my ( $n4, $n6, $skipped ) = ( 0, 0, 0 );

    for my $file ( [ $geoip, 4 ], [ $geoip6, 6 ] ) {
        my ( $path, $v ) = @$file;
        open my $fh, '<', $path or die "build-geodb: $path: $!\n";
        while ( my $line = <$fh> ) {
            next if $line =~ /^\s*(?:#|$)/;
            $line =~ s/\s+\z//;
            my ( $first, $last, $cc ) = split /,/, $line, 3;
            die "build-geodb: $path:$.: cannot parse '$line'\n"
                unless defined $cc && $cc =~ /\A(?:[A-Z]{2}|\?\?)\z/;
            if ( $not_country{$cc} ) {
                $skipped++;
                next;
            }
            $cc = 'GB' if $cc eq 'UK';
            if ( $v == 4 ) {
                die "build-geodb: $path:$.: bad IPv4 range '$line'\n"
                    unless $first =~ /\A\d+\z/ && $last =~ /\A\d+\z/
                    && $first <= $last && $last <= 0xffffffff;
                ( $first, $last ) = ( int_to_v4($first), int_to_v4($last) );
                $n4++;
            }
            else {
                if ( overlaps_alias( $first, $last ) ) {
                    $skipped++;
                    next;
                }
                $n6++;
            }
            $tree->insert_range( $first, $last, $data{$cc} //= { country => { iso_code => $cc } } );
        }
        close $fh;
    }
    my $size = write_atomic( $tree, $out );
    printf STDERR "build-geodb: %s: %d IPv4 + %d IPv6 ranges, %d countries, %d skipped, %.1f MB, %.1f s\n",
        $out, $n4, $n6, scalar( keys %data ), $skipped, $size / 1e6, time - $t0;
    return 0;
}

if ( @ARGV && $ARGV[0] eq '--fixture' ) {
    usage() unless @ARGV == 3;
    exit build_fixtures( @ARGV[ 1, 2 ] );
}
usage() unless @ARGV == 3;
exit build_country(@ARGV);

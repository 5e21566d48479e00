#!/bin/sh
# Makes the studio's certificate authority (once) and a server certificate it signs, for the PostgreSQL and
# PgBouncer of docker-compose.yml's `studio` profile (docs/studio.md, "The studio with docker compose").
#
#   studio/make-certs.sh [-d DIR] NAME [NAME...]
#
# NAME: every host name and IP address the bridges will use to reach the server, e.g. `db.studio.lan 10.0.0.5`.
# localhost and 127.0.0.1 are always added, so that the server's own administrator can connect with
# sslmode=verify-full as well. The bridges check (verify-full) that the certificate names the host in their URL.
#
# DIR (default: the folder `certs` beside this script; mode 0700) receives:
#   ca.crt      the CA's certificate: copy it to every Mac (sslrootcert); the containers get it too
#   ca.key      the CA's private key (0600): no container sees it; keep a copy offline
#   server.crt  the server's certificate, valid 825 days, signed by the CA
#   server.key  its private key (0600)
# An existing CA is kept (the Macs trust it already), so running this again renews only the server's certificate
# and key; restart the studio's containers afterwards. Remove ca.crt and ca.key to start over with a new CA.
#
# Plain `openssl` commands with a configuration file rather than `-addext`, so that it runs with OpenSSL 3 and with
# the LibreSSL that macOS ships. Keys are ECDSA P-256, which PostgreSQL, PgBouncer and every client support.
set -eu

usage() {
    echo "usage: $0 [-d DIR] NAME [NAME...]   (the server's host names and IP addresses)" >&2
    exit 2
}

# The subjectAltName entry for a name: IP: for an IPv4 or IPv6 address, DNS: for a host name. Anything else is
# refused, so that no text beyond a name reaches the extension file.
alt_name() {
    case "$1" in
        *:*)
            case "$1" in *[!0-9A-Fa-f:.]*) return 1 ;; esac
            echo "IP:$1" ;;
        *[!0-9.]*)
            case "$1" in [.-]*|*.|*..*|*[!0-9A-Za-z.-]*) return 1 ;; esac
            echo "DNS:$1" ;;
        *.*.*.*)
            echo "$1" | awk -F. '{ for (i = 1; i <= 4; i++) if ($i == "" || $i > 255) exit 1; exit NF != 4 }' \
                || return 1
            echo "IP:$1" ;;
        *)
            return 1 ;;
    esac
}

dir="$(cd "$(dirname "$0")" && pwd)/certs"
while getopts d: opt; do
    case "$opt" in
        d) dir="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -ge 1 ] || usage
command -v openssl >/dev/null 2>&1 || { echo "$0: openssl is not installed" >&2; exit 1; }

names=""
for name in "$@" localhost 127.0.0.1; do
    entry="$(alt_name "$name")" || { echo "$0: '$name' is neither a host name nor an IP address" >&2; exit 2; }
    case ",$names," in
        *",$entry,"*) ;;
        *) names="${names:+$names,}$entry" ;;
    esac
done

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat > "$work/openssl.cnf" <<CONF
[req]
distinguished_name = subject
[subject]
[studio_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[studio_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $names
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
CONF

if [ -f "$dir/ca.crt" ] && [ -f "$dir/ca.key" ]; then
    echo "keeping the CA in $dir"
elif [ -f "$dir/ca.crt" ] || [ -f "$dir/ca.key" ]; then
    echo "$0: $dir has only one of ca.crt and ca.key; restore the other, or remove both for a new CA" >&2
    exit 1
else
    openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
    openssl req -new -x509 -sha256 -days 3650 -key "$work/ca.key" -subj "/CN=oscbridge studio CA" \
        -config "$work/openssl.cnf" -extensions studio_ca -out "$work/ca.crt"
    chmod 644 "$work/ca.crt"
    mv "$work/ca.key" "$work/ca.crt" "$dir/"
    echo "made a new CA in $dir"
fi

openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
openssl req -new -sha256 -key "$work/server.key" -subj "/CN=oscbridge studio PostgreSQL" \
    -config "$work/openssl.cnf" -out "$work/server.csr"
openssl x509 -req -sha256 -days 825 -in "$work/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$work/openssl.cnf" -extensions studio_server \
    -out "$work/server.crt" 2>"$work/x509.log" || { cat "$work/x509.log" >&2; exit 1; }
openssl verify -CAfile "$dir/ca.crt" "$work/server.crt" >/dev/null
chmod 644 "$work/server.crt"
mv -f "$work/server.key" "$work/server.crt" "$dir/"

echo "server certificate for $names, valid 825 days: $dir/server.crt and server.key"
echo "copy $dir/ca.crt to each Mac; its fingerprint, to compare there:"
openssl x509 -in "$dir/ca.crt" -noout -fingerprint -sha256

#!/usr/bin/env bash
# Regenerates the htpasswd fixtures used by ../htpasswd_tests.rs with the real
# tools people use to fill ingress-nginx auth Secrets. Salts are random, so a
# rerun produces different (equally valid) hashes: commit the output, do not
# regenerate in CI.
#
# Needs: apache2-utils (htpasswd), whois (mkpasswd, libxcrypt), openssl 3, and
# python3 with `bcrypt` and `passlib` (a venv is fine):
#   apt-get install -y apache2-utils whois openssl
#   python3 -m venv /tmp/venv && /tmp/venv/bin/pip install bcrypt passlib
#   PYTHON=/tmp/venv/bin/python bash generate-htpasswd-fixtures.sh
#
# Every password below is also written in htpasswd_tests.rs next to its user.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# `htpasswd -nb` prints "user:hash" and a blank line; keep the first line.
ht() { htpasswd "$@" | head -n1; }

{
  echo "# one user per hash kind; passwords are in htpasswd_tests.rs"
  ht -nbB -C 5 bcrypt-y 'bcrypt y secret'
  echo "bcrypt-a:$(mkpasswd -m bcrypt-a -R 4 'bcrypt a secret')"
  echo "bcrypt-b:$("$PY" -c 'import bcrypt; print(bcrypt.hashpw(b"bcrypt b secret", bcrypt.gensalt(rounds=4, prefix=b"2b")).decode())')"
  # 80 bytes: bcrypt only uses the first 72, like glibc's crypt() behind nginx.
  ht -nbB -C 4 bcrypt-long '0123456789012345678901234567890123456789012345678901234567890123456789ABCDEFGHIJKL'
  ht -nbm apr1-htpasswd 'apr1 secret'
  echo "apr1-openssl:$(openssl passwd -apr1 'apr1 openssl: with colon')"
  ht -nbm apr1-empty ''
  echo "md5-openssl:$(openssl passwd -1 'md5 crypt secret')"
  echo "md5-mkpasswd:$(mkpasswd -m md5crypt 'pässwörd')"
  ht -nbs sha1-htpasswd 'sha1 secret'
  echo "ssha-passlib:$("$PY" -c 'from passlib.hash import ldap_salted_sha1 as h; print(h.hash("ssha secret"))')"
  echo "sha256-openssl:$(openssl passwd -5 'sha256 secret')"
  echo "sha256-rounds:$(mkpasswd -m sha256crypt -R 10000 'sha256 rounds secret')"
  ht -nb -2 -r 20000 sha256-htpasswd 'sha256 htpasswd secret'
  echo "sha512-openssl:$(openssl passwd -6 'sha512 secret')"
  ht -nb -5 -r 1000 sha512-htpasswd 'sha512 htpasswd secret'
  echo "sha512-python:$("$PY" -c 'from passlib.hash import sha512_crypt as h; print(h.using(rounds=5000).hash("sha512 python secret"))')"
  ht -nbd des-htpasswd 'despass'
  echo "des-mkpasswd:$(mkpasswd -m descrypt 'des8char-and-more')"
  echo "plain:{PLAIN}plain secret"
} > kinds.htpasswd

# Hashes that are real but must be refused at parse time.
{
  echo "yescrypt:$(mkpasswd -m yescrypt 'x')"
  echo "scrypt:$(mkpasswd -m scrypt 'x')"
  echo "sunmd5:$(mkpasswd -m sunmd5 'x')"
  echo "bsdi:$(mkpasswd -m bsdicrypt 'x')"
  echo "nt:$(mkpasswd -m nt 'x')"
  echo "bcrypt-cost15:$(htpasswd -nbB -C 15 u 'x' | head -n1 | cut -d: -f2)"
  echo "sha512-rounds2m:$(mkpasswd -m sha512crypt -R 2000000 'x')"
} > refused.htpasswd

# MD5-crypt, apr1 and DES-crypt (the kinds verified through crypt3_rs) at every password length
# from 0 to 40 bytes (DES: 0 to 10), since MD5-crypt branches on length. The password of user
# `KIND-N` is the first N bytes of $ALPHABET (also in htpasswd_tests.rs).
ALPHABET='abcdefghijklmnopqrstuvwxyz0123456789ABCD'
{
  for n in $(seq 0 40); do
    password=${ALPHABET:0:$n}
    echo "apr1-$n:$(openssl passwd -apr1 "$password")"
    echo "md5-$n:$(openssl passwd -1 "$password")"
  done
  for n in $(seq 0 10); do
    echo "des-$n:$(mkpasswd -m descrypt "${ALPHABET:0:$n}")"
  done
} > lengths.htpasswd

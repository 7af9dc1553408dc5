#!/usr/bin/env bash
# Make sure the Redis and PostgreSQL that the tests use answer on 127.0.0.1.
# Starts them with the machine's own packages when they are down; fails loudly otherwise.
set -u
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "Redis is down on 127.0.0.1:6379; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    || { echo "cannot start Redis: install redis-server" >&2; exit 1; }
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "PostgreSQL is down on 127.0.0.1:5432; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
    || { echo "cannot start PostgreSQL: install postgresql" >&2; exit 1; }
fi
for i in $(seq 1 30); do
  (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && exit 0
  sleep 1
done
echo "Redis or PostgreSQL did not come up on 127.0.0.1" >&2
exit 1

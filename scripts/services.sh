#!/usr/bin/env bash
# Starts the local PostgreSQL, Redis and RabbitMQ when they are not already up (CI and dev machines).
set -u

up() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on port $1" >&2
  return 1
}

if ! up 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for 5432 PostgreSQL
fi
if ! up 6379 && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi
if ! up 5672 && command -v rabbitmq-server >/dev/null; then
  rabbitmq-server -detached
  wait_for 5672 RabbitMQ || true  # optional: its tests skip when it is absent
fi
exit 0

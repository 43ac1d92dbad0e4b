#!/bin/sh
# pgadmin's entrypoint in docker-compose.yml: registers Ordo's database with
# the user and database name the pgdatabase service was given (POSTGRES_USER,
# POSTGRES_DB, from .env or their defaults), then starts pgadmin. The server
# list is replaced on every start (PGADMIN_REPLACE_SERVERS_ON_STARTUP), so a
# changed .env is followed after `docker compose up -d`.
set -eu

user="${POSTGRES_USER:-ordo}"
db="${POSTGRES_DB:-ordo}"
# the values go into JSON unescaped: refuse what would need escaping
for v in "POSTGRES_USER=$user" "POSTGRES_DB=$db"; do
	case "${v#*=}" in
	*[!A-Za-z0-9_.@-]* | "")
		echo "pgadmin entrypoint: ${v%%=*}=\"${v#*=}\": use letters, digits and _ . @ - only" >&2
		exit 2
		;;
	esac
done

PGADMIN_SERVER_JSON_FILE="${PGADMIN_SERVER_JSON_FILE:-/tmp/ordo-servers.json}"
export PGADMIN_SERVER_JSON_FILE
cat >"$PGADMIN_SERVER_JSON_FILE" <<JSON
{
  "Servers": {
    "1": {
      "Name": "Ordo",
      "Group": "Servers",
      "Host": "pgdatabase",
      "Port": 5432,
      "MaintenanceDB": "$db",
      "Username": "$user",
      "SSLMode": "disable"
    }
  }
}
JSON
exec /entrypoint.sh "$@"

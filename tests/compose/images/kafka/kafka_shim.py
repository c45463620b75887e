"""The apache/kafka commands the compose file uses, for the tansu stand-in image.

kafka-server-start: runs tansu on the PLAINTEXT listener of KAFKA_ADVERTISED_LISTENERS.
kafka-topics --bootstrap-server B --create [--if-not-exists] --topic T [--partitions N]
    [--replication-factor R]
kafka-broker-api-versions --bootstrap-server B: exit 0 once the broker answers.
"""
import argparse
import os
import sys


def server_start():
    advertised = os.environ.get("KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://localhost:9092")
    listener = next(
        (part.split("://", 1)[1] for part in advertised.split(",") if part.startswith("PLAINTEXT://")),
        "localhost:9092",
    )
    port = listener.rsplit(":", 1)[1]
    env = dict(os.environ)
    env.update(
        CLUSTER_ID=os.environ.get("CLUSTER_ID", "sluice-compose"),
        LISTENER_URL=f"tcp://0.0.0.0:{port}",
        ADVERTISED_LISTENER_URL=f"tcp://{listener}",
        STORAGE_ENGINE="memory://tansu/",
    )
    print(f"tansu on 0.0.0.0:{port}, advertised as {listener}", flush=True)
    os.execvpe("tansu", ["tansu", "broker", "--silent"], env)


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def topics(argv):
    parser = argparse.ArgumentParser(prog="kafka-topics.sh")
    parser.add_argument("--bootstrap-server", required=True)
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--if-not-exists", action="store_true")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.create:
        sys.exit("only --create is supported by this stand-in")
    from confluent_kafka.admin import NewTopic

    client = admin(args.bootstrap_server)
    if args.if_not_exists and args.topic in client.list_topics(timeout=10).topics:
        return
    future = client.create_topics([NewTopic(args.topic, args.partitions, args.replication_factor)])
    try:
        future[args.topic].result(timeout=30)
    except Exception as error:  # noqa: BLE001 - reported like the upstream tool does
        if not (args.if_not_exists and "already exists" in str(error).lower()):
            sys.exit(f"Error while executing topic command: {error}")
    print(f"Created topic {args.topic}.")


def api_versions(argv):
    parser = argparse.ArgumentParser(prog="kafka-broker-api-versions.sh")
    parser.add_argument("--bootstrap-server", required=True)
    args = parser.parse_args(argv)
    admin(args.bootstrap_server).list_topics(timeout=5)


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    {"kafka-server-start": lambda _: server_start(), "kafka-topics": topics,
     "kafka-broker-api-versions": api_versions}[command](rest)

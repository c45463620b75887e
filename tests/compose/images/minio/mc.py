#!/usr/bin/env python3
"""A MinIO client (`mc`) shim for the stand-in image: the subcommands the compose file
uses, with mc's arguments.

mc alias set ALIAS URL ACCESS_KEY SECRET_KEY
mc mb [--ignore-existing|-p] ALIAS/BUCKET...
mc event add [--ignore-existing|-p] ALIAS/BUCKET ARN [--event put] [--prefix P] [--suffix S]
mc ready ALIAS
Aliases also come from MC_HOST_<ALIAS>=http://KEY:SECRET@HOST:PORT, like mc's.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

CONFIG = os.path.expanduser("~/.mc-shim.json")
EVENTS = {"put": "s3:ObjectCreated:*", "delete": "s3:ObjectRemoved:*", "get": "s3:ObjectAccessed:*"}


def aliases():
    try:
        with open(CONFIG) as file:
            found = json.load(file)
    except FileNotFoundError:
        found = {"local": {"url": "http://localhost:9000", "key": "", "secret": ""}}
    for name, value in os.environ.items():
        if name.startswith("MC_HOST_"):
            url = urllib.parse.urlsplit(value)
            found[name[len("MC_HOST_"):]] = {
                "url": f"{url.scheme}://{url.hostname}:{url.port or 80}",
                "key": urllib.parse.unquote(url.username or ""),
                "secret": urllib.parse.unquote(url.password or ""),
            }
    return found


def client(alias):
    import boto3

    target = aliases()[alias]
    return boto3.client(
        "s3", endpoint_url=target["url"], aws_access_key_id=target["key"],
        aws_secret_access_key=target["secret"], region_name="us-east-1",
    )


def split(path):
    alias, _, bucket = path.partition("/")
    return alias, bucket.strip("/")


def alias_set(args):
    found = aliases()
    found[args.alias] = {"url": args.url, "key": args.key, "secret": args.secret}
    with open(CONFIG, "w") as file:
        json.dump(found, file)
    print(f"Added `{args.alias}` successfully.")


def make_buckets(args):
    for path in args.targets:
        alias, bucket = split(path)
        s3 = client(alias)
        try:
            s3.create_bucket(Bucket=bucket)
            print(f"Bucket created successfully `{path}`.")
        except s3.exceptions.BucketAlreadyOwnedByYou:
            if not args.ignore_existing:
                sys.exit(f"mc: <ERROR> Unable to make bucket `{path}`. Your previous request to create the named bucket succeeded and you already own it.")


def event_add(args):
    alias, bucket = split(args.target)
    s3 = client(alias)
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    queues = config.setdefault("QueueConfigurations", [])
    if any(queue["QueueArn"] == args.arn for queue in queues):
        if args.ignore_existing:
            return
        sys.exit("mc: <ERROR> Cannot enable notification on the specified bucket. An object event notification with the same ARN already exists.")
    rules = [{"Name": name, "Value": value} for name, value in (("prefix", args.prefix), ("suffix", args.suffix)) if value]
    queue = {"QueueArn": args.arn, "Events": [EVENTS[name] for name in args.event.split(",")]}
    if rules:
        queue["Filter"] = {"Key": {"FilterRules": rules}}
    queues.append(queue)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    print(f"Successfully added {args.arn}")


def ready(args):
    url = aliases()[args.alias]["url"] + "/minio/health/live"
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        pass  # it answers: up
    except OSError as error:
        sys.exit(f"mc: <ERROR> {args.alias} is not ready: {error}")
    print(f"The cluster '{args.alias}' is ready")


def main():
    parser = argparse.ArgumentParser(prog="mc")
    commands = parser.add_subparsers(dest="command", required=True)
    alias = commands.add_parser("alias").add_subparsers(dest="verb", required=True).add_parser("set")
    alias.add_argument("alias")
    alias.add_argument("url")
    alias.add_argument("key")
    alias.add_argument("secret")
    alias.set_defaults(run=alias_set)
    mb = commands.add_parser("mb")
    mb.add_argument("--ignore-existing", "-p", action="store_true")
    mb.add_argument("targets", nargs="+")
    mb.set_defaults(run=make_buckets)
    add = commands.add_parser("event").add_subparsers(dest="verb", required=True).add_parser("add")
    add.add_argument("--ignore-existing", "-p", action="store_true")
    add.add_argument("target")
    add.add_argument("arn")
    add.add_argument("--event", default="put,delete,get")
    add.add_argument("--prefix", default="")
    add.add_argument("--suffix", default="")
    add.set_defaults(run=event_add)
    ready_parser = commands.add_parser("ready")
    ready_parser.add_argument("alias")
    ready_parser.set_defaults(run=ready)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

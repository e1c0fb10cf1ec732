"""Python handlers of the invoke end-to-end tests (one per function)."""

import os
import time

count = 0


def echo(event, context):
    global count
    count += 1
    print("py echo", context.aws_request_id)
    return {"event": event, "count": count}


def fail(event, context):
    raise ValueError("bad value: " + str(event.get("msg")))


def sleep(event, context):
    time.sleep(3)
    return "woke up"


def ctx(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "aws_request_id": context.aws_request_id,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "handler": os.environ.get("_HANDLER"),
    }


def sdk(event, context):
    """The AWS SDK Lambda's Python runtimes include: a client is made
    without any network."""
    try:
        import boto3
    except ImportError:
        return {"missing": True}
    client = boto3.client(
        "lambda", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x", aws_secret_access_key="y"
    )
    return {"missing": False, "version": boto3.__version__, "service": client.meta.service_model.service_name}

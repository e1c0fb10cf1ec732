# The Python twin of bench/echo: returns the event unchanged.
def lambda_handler(event, context):
    return event

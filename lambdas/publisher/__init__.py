"""The publisher: an event store's DynamoDB stream to the service's Kinesis stream (handler.py)."""

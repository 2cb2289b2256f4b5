"""kafkaupstream: an Apache APISIX external plugin runner that produces request bodies to Kafka."""

__version__ = "0.1.0"

"""The Kafka plugin: route configuration, precedence, JSON bodies, records and HTTP answers."""

from kafkaupstream.plugin.config import RouteConfig, RouteConfigError, parse_route_config
from kafkaupstream.plugin.kafka_plugin import KafkaUpstreamPlugin

__all__ = ["KafkaUpstreamPlugin", "RouteConfig", "RouteConfigError", "parse_route_config"]

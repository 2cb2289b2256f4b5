from kafkaupstream.builtin import StopPlugin
class KafkaUpstreamPlugin(StopPlugin):
    name = "kafkaupstream"

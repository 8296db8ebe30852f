"""thumbline: a Kafka-native pipeline for end-user feedback on LLM applications."""

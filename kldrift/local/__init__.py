"""Local development services: a real Kafka broker from Maven Central and Beam's Prism runner."""

"""What the service runs on: the JVM jars and the Spark session."""

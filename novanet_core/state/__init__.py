"""The cluster state the agent consumes, and the sources that feed it."""

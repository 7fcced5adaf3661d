"""The local JSON API shared by the agent (CNI + novanetctl sockets) and the dataplane."""

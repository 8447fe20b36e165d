"""Stand-in agent processes for bench/agent_path.py: just enough of each protocol to stream
stamped text deltas (no model, no tool, stdlib only so they start fast)."""

"""``python -m harness.bench`` (``make bench``): the runner against its floor and Kafka's ceiling.

One run measures side by side on this machine: (a) the floor, a bare server holding the same
conversation (harness/floor.py) on the runner's event loop; (b) raw confluent-kafka produce to the
same broker; the runner with the built-in stop plugin (RPC cost without Kafka); (c) the runner in
async mode; (d) in sync mode (acks=all). Figures are printed and written to
bench/results/latest.md; nothing asserts them.
"""

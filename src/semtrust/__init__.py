"""semtrust: trust orchestration for Linux workloads.

A sensor turns kernel events into canonical TSEM events; the Trusted Modeling
Agent (TMA) turns each event into a security state coefficient and a verdict;
the orchestrator applies the verdict back through the sensor.
"""

__version__ = "0.1.0"

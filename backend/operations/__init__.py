"""Live operations: the CSMS (OCPP 2.0.1/2.1 over websockets), the field data it stores as received,
charging profiles from the plan, the operations loop that re-plans, station simulators to run against,
and metered energy for settlement."""

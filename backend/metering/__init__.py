"""The metering service: an independent process with its own key that signs a period's metered root only
after computing it itself from the meter data."""

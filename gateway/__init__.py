"""The dealership telephony and SMS gateway: the core every feature package builds on."""

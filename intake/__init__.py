"""Leads from every channel: ADF/XML from third-party sites, by e-mail or HTTP, parsed and checked."""

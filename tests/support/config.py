"""The dealer group most tests run against."""

from __future__ import annotations

import re

BASIC_CONFIG = """
stores:
  - key: north-honda
    name: North Honda
    timezone: America/New_York
    main_line: "+12025550100"
    hours:
      sales: {mon: "09:00-20:00", tue: "09:00-20:00", wed: "09:00-20:00", thu: "09:00-20:00",
              fri: "09:00-20:00", sat: "09:00-18:00", sun: closed}
      service: {mon: "07:30-18:00", tue: "07:30-18:00", wed: "07:30-18:00", thu: "07:30-18:00",
                fri: "07:30-18:00"}
    response_sla: 5m
    after_hours_grace: 30m
  - key: south-ford
    name: South Ford
    timezone: America/Chicago
    main_line: "+13125550100"
    hours:
      sales: {mon: "09:00-20:00", tue: "09:00-20:00", wed: "09:00-20:00", thu: "09:00-20:00",
              fri: "09:00-20:00", sat: "09:00-18:00", sun: closed}
    response_sla: 10m
    after_hours_grace: 15m
agents:
  - {key: alice, name: Alice Ng, phone: "+12025550111", email: alice@example.com,
     store: north-honda, departments: [sales], role: agent}
  - {key: ben, name: Ben Ortiz, phone: "+12025550112", email: ben@example.com,
     store: north-honda, departments: [sales], role: agent}
  - {key: cara, name: Cara Diaz, phone: "+12025550113", email: cara@example.com,
     store: north-honda, departments: [sales], role: agent}
  - {key: dmitri, name: Dmitri Volkov, phone: "+12025550114", email: dmitri@example.com,
     store: north-honda, departments: [sales, service], role: manager}
  - {key: sam, name: Sam Ford, phone: "+13125550111", email: sam@example.com,
     store: south-ford, departments: [sales], role: agent}
cadences:
  - key: missed-call
    steps:
      - {after: 0s, text: "Hi, this is {store}. Sorry we missed your call! How can we help?"}
      - {after: 4h, text: "{agent} from {store} here. Still looking? Reply with a good time to talk."}
      - {after: 1d, text: "Hi {first_name}, {store} again. Want us to hold a car for a test drive?"}
numbers:
  - {number: "+12025550123", store: north-honda, department: sales, source: Cars.com,
     ring: [alice, ben], strategy: simultaneous, ring_timeout: 18s, screen: true,
     record: false, cadence: missed-call}
  - {number: "+12025550124", store: north-honda, department: sales, source: Website,
     ring: [alice, ben, cara], strategy: sequential, ring_timeout: 15s, screen: true,
     record: false, cadence: missed-call}
  - {number: "+12025550125", store: north-honda, department: sales, source: Google Ads,
     ring: [alice, ben, cara], strategy: round-robin, ring_timeout: 15s, screen: true,
     record: false, cadence: missed-call}
  - {number: "+12025550126", store: north-honda, department: sales, source: Radio,
     ring: [alice], strategy: simultaneous, ring_timeout: 15s, screen: false,
     record: false, cadence: missed-call}
  - {number: "+13125550123", store: south-ford, department: sales, source: AutoTrader,
     ring: [sam], strategy: simultaneous, ring_timeout: 18s, screen: true,
     record: false, cadence: missed-call}
"""

SIMULTANEOUS = "+12025550123"
SEQUENTIAL = "+12025550124"
ROUND_ROBIN = "+12025550125"
UNSCREENED = "+12025550126"
SOUTH = "+13125550123"
CUSTOMER = "+12025550199"


def store_hours(config: str, hours: str) -> str:
    """A configuration with every store open around the clock ("open") or closed around the clock."""
    span = '"00:00-23:59"' if hours == "open" else "closed"
    config = re.sub(r'"\d\d:\d\d-\d\d:\d\d"', span, config)
    return config.replace("sun: closed", f"sun: {span}")

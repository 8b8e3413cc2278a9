"""When automated texts may reach a number in each US state: the one table of state rules.

Federal law (47 C.F.R. § 64.1200(c)(1)) allows telephone solicitations from 08:00 to 21:00 at the
called party's location. Some states allow less, for texts too or for "calls" that their courts and
regulators read as covering texts. Each entry below says which statute it encodes; a state not in the
table is held to the federal window. The send guard (gateway/messaging/guard.py) applies these windows to
automated texts; a text a person writes keeps the federal window, except in the three states whose
rule the guard applied to every text before this table existed (Florida, Oklahoma, Maryland).

Decisions written down here so they are not rediscovered:

- Hours are local wall-clock time at the recipient, [start, end): a window "08:00-20:00" lets a text go
  at 08:00 and at 19:59, not at 20:00.
- A day with no hours is closed all day (Sundays in Utah, Mississippi, Louisiana, Rhode Island).
- Legal holidays are NOT encoded: Utah, Louisiana and Rhode Island also close on their state's legal
  holidays, whose lists differ by state and year. Until they are, texts can go on those days within
  the weekday hours. The README lists this gap.
- Mississippi's statute says "Central Standard Time"; it is read as the local time in Mississippi
  (Central time all year, standard or daylight), as the state's own guidance does.
- The rules bind "telephone solicitations" (marketing); the gateway does not try to tell a marketing
  text from another and holds every automated text to them. A stricter window only delays a text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

Hours = tuple[time, time]

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Window:
    """The local hours texts may go on each day of the week (Monday first; None: closed all day), the cap
    on automated texts per rolling 24 hours, and the law it comes from (for the reason a person reads)."""

    week: tuple[Hours | None, ...]
    daily_automated_cap: int | None = None
    law: str | None = None

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a window has hours for each of the 7 days of the week")
        for hours in self.week:
            if hours is not None and not hours[0] < hours[1]:
                raise ValueError(f"a day's hours must open before they close: {hours}")

    def hours_on(self, day: date) -> Hours | None:
        return self.week[day.weekday()]

    @property
    def start(self) -> time:
        """The weekday (Monday) opening; `hours_on` gives any day's."""
        return self._weekday()[0]

    @property
    def end(self) -> time:
        """The weekday (Monday) closing; `hours_on` gives any day's."""
        return self._weekday()[1]

    def _weekday(self) -> Hours:
        hours = self.week[0]
        if hours is None:
            raise ValueError("no window is closed on Mondays")
        return hours

    def describe(self, day: date) -> str:
        """What this window allows on `day`, for the reason a person reads."""
        hours = self.hours_on(day)
        uniform = len(set(self.week)) == 1
        when = "" if uniform else f" on {_DAY_NAMES[day.weekday()]}s"
        law = f" under {self.law}" if self.law else ""
        if hours is None:
            return f"no automated texts may go{when}{law}"
        return f"texts may go between {hours[0]:%H:%M} and {hours[1]:%H:%M} their time{when}{law}"


def _h(start: int, end: int) -> Hours:
    return (time(start), time(end))


def _every_day(hours: Hours, *, cap: int | None = None, law: str | None = None) -> Window:
    return Window((hours,) * 7, cap, law)


def _by_day(weekdays: Hours, saturday: Hours | None, sunday: Hours | None, *, law: str) -> Window:
    return Window((weekdays,) * 5 + (saturday, sunday), None, law)


# 47 C.F.R. § 64.1200(c)(1): no telephone solicitation before 8 a.m. or after 9 p.m. local time.
FEDERAL = _every_day(_h(8, 21))

# The table. Each entry: the window, and in the comment the statute it encodes and what it says.
STATE_WINDOWS: dict[str, Window] = {
    # Fla. Stat. § 501.616(6)(a)-(b) (Florida Telemarketing Act, as amended by SB 1120, 2021): no
    # commercial telephone solicitation before 8 a.m. or after 8 p.m. in the called person's time zone;
    # at most 3 from any number on the same subject in 24 hours. (§ 501.059, the Florida Telephone
    # Solicitation Act, governs consent for automated texts, not the hours.)
    "FL": _every_day(_h(8, 20), cap=3, law="Fla. Stat. § 501.616"),
    # Okla. Stat. tit. 15, § 775C.4 (Telephone Solicitation Act of 2022, § 775C.1 et seq.): 8 a.m. to
    # 8 p.m.; at most 3 calls or texts on the same subject in 24 hours.
    "OK": _every_day(_h(8, 20), cap=3, law="Okla. Stat. tit. 15, § 775C.4"),
    # Md. Code, Com. Law § 14-4501 et seq., as amended by the Stop the Spam Calls Act of 2023 (SB 90, in
    # force 2024-01-01): 8 a.m. to 8 p.m. in the called party's time zone; at most 3 calls or texts on
    # the same subject in 24 hours. (The subsection number is not checked here.)
    "MD": _every_day(_h(8, 20), cap=3, law="Maryland's Stop the Spam Calls Act (Md. Code, Com. Law § 14-4501 et seq.)"),
    # Tex. Bus. & Com. Code § 301.051, texts included by SB 140 (in force 2025-09-01): not before 9 a.m.
    # or after 9 p.m. on a weekday or Saturday, not before noon or after 9 p.m. on Sunday.
    "TX": _by_day(_h(9, 21), _h(9, 21), _h(12, 21), law="Tex. Bus. & Com. Code § 301.051"),
    # Utah Code § 13-25a-103(3): without prior express consent, no telephone solicitation between 9 p.m.
    # and 8 a.m., on a Sunday or on a legal holiday (holidays: not encoded, see above).
    "UT": _by_day(_h(8, 21), _h(8, 21), None, law="Utah Code § 13-25a-103"),
    # Miss. Code Ann. § 77-3-723(1) (Mississippi Telephone Solicitation Act; texts included since 2019):
    # only between 8 a.m. and 8 p.m. Central Standard Time; none on a Sunday.
    "MS": _by_day(_h(8, 20), _h(8, 20), None, law="Miss. Code Ann. § 77-3-723"),
    # La. R.S. 45:811(2)-(3) (ADAD equipment or a live operator, advertising or offering for sale): only
    # between 8 a.m. and 8 p.m. Monday through Saturday; never on Sundays or state holidays (holidays:
    # not encoded, see above).
    "LA": _by_day(_h(8, 20), _h(8, 20), None, law="La. R.S. 45:811"),
    # RCW 80.36.390 (as amended by 2022 c 23, HB 1497) and RCW 19.158.040(2): no telephone solicitation
    # received before 8 a.m. or after 8 p.m. at the recipient's local time.
    "WA": _every_day(_h(8, 20), law="RCW 80.36.390 and RCW 19.158.040"),
    # Conn. Gen. Stat. § 42-288a, as amended by P.A. 23-98 (in force 2023-10-01; "telephonic sales call"
    # includes text and media messages): only between 9 a.m. and 8 p.m. local time.
    "CT": _every_day(_h(9, 20), law="Conn. Gen. Stat. § 42-288a"),
    # 201 CMR 12.02(2) (under M.G.L. c. 159C): no unsolicited telephonic sales call between 8:00 p.m. and
    # 8:00 a.m., local time at the consumer's location.
    "MA": _every_day(_h(8, 20), law="201 CMR 12.02"),
    # N.M. Stat. § 57-12-22(B)(5): no telephone solicitation received before 9:00 a.m. or after 9:00 p.m.
    "NM": _every_day(_h(9, 21), law="N.M. Stat. § 57-12-22"),
    # R.I. Gen. Laws § 5-61-3.6 with § 5-61-2 ("hours of operation"): Monday through Friday 9:00 a.m. to
    # 6:00 p.m., Saturday 10:00 a.m. to 5:00 p.m., except state or federal holidays (not encoded, see
    # above); Sunday is not an hour of operation.
    "RI": _by_day(_h(9, 18), _h(10, 17), None, law="R.I. Gen. Laws § 5-61-3.6"),
}

# States whose window the guard also applies to texts a person writes (it did before this table).
PERSON_TEXT_STATES = frozenset({"FL", "OK", "MD"})

# Every area code of the states in the table, so the rule holds whatever the installed phonenumbers
# data says (tests check that the library agrees today). A new overlay code must be added here.
AREA_CODE_STATES: dict[str, str] = {
    **dict.fromkeys(
        ["239", "305", "321", "324", "352", "386", "407", "448", "561", "645", "656", "689",
         "727", "728", "754", "772", "786", "813", "850", "863", "904", "941", "954"],
        "FL",
    ),
    **dict.fromkeys(["405", "539", "572", "580", "918"], "OK"),
    **dict.fromkeys(["227", "240", "301", "410", "443", "667"], "MD"),
    **dict.fromkeys(
        ["210", "214", "254", "281", "325", "346", "361", "409", "430", "432", "469", "512", "682",
         "713", "726", "737", "806", "817", "830", "832", "903", "915", "936", "940", "945", "956",
         "972", "979"],
        "TX",
    ),
    **dict.fromkeys(["385", "435", "801"], "UT"),
    **dict.fromkeys(["228", "601", "662", "769"], "MS"),
    **dict.fromkeys(["225", "318", "337", "504", "985"], "LA"),
    **dict.fromkeys(["206", "253", "360", "425", "509", "564"], "WA"),
    **dict.fromkeys(["203", "475", "860", "959"], "CT"),
    **dict.fromkeys(["339", "351", "413", "508", "617", "774", "781", "857", "978"], "MA"),
    **dict.fromkeys(["505", "575"], "NM"),
    **dict.fromkeys(["401"], "RI"),
}  # fmt: skip


def window_for(state: str | None, *, automated: bool) -> Window:
    """The window for a text to a number in `state` (None: outside the US or unknown)."""
    rule = STATE_WINDOWS.get(state) if state is not None else None
    if rule is None or (not automated and state not in PERSON_TEXT_STATES):
        return FEDERAL
    return rule

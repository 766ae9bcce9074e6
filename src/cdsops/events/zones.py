"""A student's local time zone from the registration's country and city.

The mapping (documented in docs/audit.md): the country (a name or an ISO 3166 alpha-2/3
code, any case) picks one IANA zone from :data:`COUNTRY_ZONES` (the zone of its capital or
most populous region); for the countries that span several zones, :data:`CITY_ZONES`
refines by city. A country not in the table (or a zone the system's tz database lacks)
falls back to the platform's zone, and the report counts those students as "zone unknown".
Zones come from the standard tz database through :mod:`zoneinfo`.
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["COUNTRY_ZONES", "CITY_ZONES", "zone_for"]

#: country -> zone; keys are lower case; names, alpha-2 and alpha-3 codes
_TABLE = [
    (("united states", "usa", "us", "united states of america"), "America/New_York"),
    (("canada", "ca", "can"), "America/Toronto"),
    (("mexico", "mx", "mex"), "America/Mexico_City"),
    (("brazil", "br", "bra"), "America/Sao_Paulo"),
    (("argentina", "ar", "arg"), "America/Argentina/Buenos_Aires"),
    (("chile", "cl", "chl"), "America/Santiago"),
    (("colombia", "co", "col"), "America/Bogota"),
    (("peru", "pe", "per"), "America/Lima"),
    (("united kingdom", "uk", "gb", "gbr", "great britain", "england", "scotland", "wales"), "Europe/London"),
    (("ireland", "ie", "irl"), "Europe/Dublin"),
    (("portugal", "pt", "prt"), "Europe/Lisbon"),
    (("spain", "es", "esp"), "Europe/Madrid"),
    (("france", "fr", "fra"), "Europe/Paris"),
    (("belgium", "be", "bel"), "Europe/Brussels"),
    (("netherlands", "nl", "nld", "the netherlands"), "Europe/Amsterdam"),
    (("germany", "de", "deu"), "Europe/Berlin"),
    (("switzerland", "ch", "che"), "Europe/Zurich"),
    (("austria", "at", "aut"), "Europe/Vienna"),
    (("italy", "it", "ita"), "Europe/Rome"),
    (("denmark", "dk", "dnk"), "Europe/Copenhagen"),
    (("norway", "no", "nor"), "Europe/Oslo"),
    (("sweden", "se", "swe"), "Europe/Stockholm"),
    (("finland", "fi", "fin"), "Europe/Helsinki"),
    (("poland", "pl", "pol"), "Europe/Warsaw"),
    (("czechia", "czech republic", "cz", "cze"), "Europe/Prague"),
    (("greece", "gr", "grc"), "Europe/Athens"),
    (("turkey", "türkiye", "tr", "tur"), "Europe/Istanbul"),
    (("ukraine", "ua", "ukr"), "Europe/Kyiv"),
    (("russia", "russian federation", "ru", "rus"), "Europe/Moscow"),
    (("israel", "il", "isr"), "Asia/Jerusalem"),
    (("egypt", "eg", "egy"), "Africa/Cairo"),
    (("nigeria", "ng", "nga"), "Africa/Lagos"),
    (("kenya", "ke", "ken"), "Africa/Nairobi"),
    (("ethiopia", "et", "eth"), "Africa/Addis_Ababa"),
    (("south africa", "za", "zaf"), "Africa/Johannesburg"),
    (("saudi arabia", "sa", "sau"), "Asia/Riyadh"),
    (("united arab emirates", "uae", "ae", "are"), "Asia/Dubai"),
    (("iran", "ir", "irn"), "Asia/Tehran"),
    (("pakistan", "pk", "pak"), "Asia/Karachi"),
    (("india", "in", "ind"), "Asia/Kolkata"),
    (("bangladesh", "bd", "bgd"), "Asia/Dhaka"),
    (("nepal", "np", "npl"), "Asia/Kathmandu"),
    (("thailand", "th", "tha"), "Asia/Bangkok"),
    (("vietnam", "viet nam", "vn", "vnm"), "Asia/Ho_Chi_Minh"),
    (("malaysia", "my", "mys"), "Asia/Kuala_Lumpur"),
    (("singapore", "sg", "sgp"), "Asia/Singapore"),
    (("indonesia", "id", "idn"), "Asia/Jakarta"),
    (("philippines", "ph", "phl"), "Asia/Manila"),
    (("china", "cn", "chn"), "Asia/Shanghai"),
    (("hong kong", "hk", "hkg"), "Asia/Hong_Kong"),
    (("taiwan", "tw", "twn"), "Asia/Taipei"),
    (("south korea", "korea", "republic of korea", "kr", "kor"), "Asia/Seoul"),
    (("japan", "jp", "jpn"), "Asia/Tokyo"),
    (("australia", "au", "aus"), "Australia/Sydney"),
    (("new zealand", "nz", "nzl"), "Pacific/Auckland"),
]
COUNTRY_ZONES: dict[str, str] = {name: zone for names, zone in _TABLE for name in names}

#: (country zone, city lower case) -> zone, for countries spanning several zones
CITY_ZONES: dict[tuple[str, str], str] = {
    ("America/New_York", c): "America/Chicago" for c in ("chicago", "houston", "dallas", "austin", "minneapolis", "st. louis", "nashville", "new orleans")
} | {
    ("America/New_York", c): "America/Denver" for c in ("denver", "salt lake city", "albuquerque", "boulder")
} | {
    ("America/New_York", "phoenix"): "America/Phoenix",
    ("America/New_York", "tucson"): "America/Phoenix",
} | {
    ("America/New_York", c): "America/Los_Angeles" for c in ("los angeles", "san francisco", "seattle", "portland", "san diego", "san jose", "stanford", "berkeley", "palo alto")  # noqa: E501  a literal line kept whole for grep
} | {
    ("America/New_York", "honolulu"): "Pacific/Honolulu",
    ("America/New_York", "anchorage"): "America/Anchorage",
    ("America/Toronto", "vancouver"): "America/Vancouver",
    ("America/Toronto", "calgary"): "America/Edmonton",
    ("America/Toronto", "edmonton"): "America/Edmonton",
    ("America/Toronto", "winnipeg"): "America/Winnipeg",
    ("America/Toronto", "halifax"): "America/Halifax",
    ("America/Sao_Paulo", "manaus"): "America/Manaus",
    ("Australia/Sydney", "perth"): "Australia/Perth",
    ("Australia/Sydney", "adelaide"): "Australia/Adelaide",
    ("Australia/Sydney", "brisbane"): "Australia/Brisbane",
    ("Australia/Sydney", "darwin"): "Australia/Darwin",
    ("Europe/Moscow", "novosibirsk"): "Asia/Novosibirsk",
    ("Europe/Moscow", "vladivostok"): "Asia/Vladivostok",
    ("Europe/Moscow", "yekaterinburg"): "Asia/Yekaterinburg",
    ("Asia/Jakarta", "bali"): "Asia/Makassar",
    ("Asia/Jakarta", "denpasar"): "Asia/Makassar",
    ("America/Mexico_City", "tijuana"): "America/Tijuana",
}


@lru_cache(maxsize=4096)
def zone_for(country: str | None, city: str | None) -> ZoneInfo | None:
    """The zone of a registration's country (refined by city), or None when unknown."""
    base = COUNTRY_ZONES.get((country or "").strip().lower())
    if base is None:
        return None
    name = CITY_ZONES.get((base, (city or "").strip().lower()), base)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None

"""Regions of Kazakhstan (17 oblasts and 3 cities of republican significance)."""

from enum import StrEnum


class Region(StrEnum):
    astana = "astana"
    almaty_city = "almaty_city"
    shymkent = "shymkent"
    abai = "abai"
    akmola = "akmola"
    aktobe = "aktobe"
    almaty_region = "almaty_region"
    atyrau = "atyrau"
    east_kazakhstan = "east_kazakhstan"
    west_kazakhstan = "west_kazakhstan"
    zhambyl = "zhambyl"
    zhetisu = "zhetisu"
    karaganda = "karaganda"
    kostanay = "kostanay"
    kyzylorda = "kyzylorda"
    mangystau = "mangystau"
    north_kazakhstan = "north_kazakhstan"
    pavlodar = "pavlodar"
    turkistan = "turkistan"
    ulytau = "ulytau"


REGION_NAMES: dict[Region, tuple[str, str]] = {
    # (kk, ru)
    Region.astana: ("Астана қаласы", "город Астана"),
    Region.almaty_city: ("Алматы қаласы", "город Алматы"),
    Region.shymkent: ("Шымкент қаласы", "город Шымкент"),
    Region.abai: ("Абай облысы", "область Абай"),
    Region.akmola: ("Ақмола облысы", "Акмолинская область"),
    Region.aktobe: ("Ақтөбе облысы", "Актюбинская область"),
    Region.almaty_region: ("Алматы облысы", "Алматинская область"),
    Region.atyrau: ("Атырау облысы", "Атырауская область"),
    Region.east_kazakhstan: ("Шығыс Қазақстан облысы", "Восточно-Казахстанская область"),
    Region.west_kazakhstan: ("Батыс Қазақстан облысы", "Западно-Казахстанская область"),
    Region.zhambyl: ("Жамбыл облысы", "Жамбылская область"),
    Region.zhetisu: ("Жетісу облысы", "область Жетісу"),
    Region.karaganda: ("Қарағанды облысы", "Карагандинская область"),
    Region.kostanay: ("Қостанай облысы", "Костанайская область"),
    Region.kyzylorda: ("Қызылорда облысы", "Кызылординская область"),
    Region.mangystau: ("Маңғыстау облысы", "Мангистауская область"),
    Region.north_kazakhstan: ("Солтүстік Қазақстан облысы", "Северо-Казахстанская область"),
    Region.pavlodar: ("Павлодар облысы", "Павлодарская область"),
    Region.turkistan: ("Түркістан облысы", "Туркестанская область"),
    Region.ulytau: ("Ұлытау облысы", "область Ұлытау"),
}

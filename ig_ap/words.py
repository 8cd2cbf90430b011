"""The word lists the tasks are built from: names, places, objects, templates, professions, capitals.

Kept apart from the task logic (:mod:`ig_ap.tasks`), which keeps only the entries that
suit a tokenizer (e.g. names that are one token with a leading space).
"""

NAMES = """Mary John Alice Bob Sarah Michael Emma James Olivia David Sophia Daniel Emily Thomas Anna
Paul Laura Mark Rachel Peter Jessica Kevin Lisa Brian Karen Steven Linda Jason Susan Eric Amy Adam
Helen Ryan Kate Andrew Julia Justin Grace Jacob Rose Matthew Claire Tim Jane Chris Diana George Lucy
Henry Nancy Jack Maria Sam Victoria Tom Amanda Joseph Megan William Elizabeth Richard Anne Robert
Nicole Charles Sandra Edward Martha Frank Alex Kelly Joe Jennifer Patrick Hannah Scott Lily Kyle
Sara Ben Carol Dan Ruth Max Leo Nina Oscar Eva Jerry Holly Ian Jill Luke Beth Carl Joan""".split()

PLACES = """store garden restaurant school hospital office house station park library beach market
church cafe museum theater airport bank hotel kitchen""".split()

OBJECTS = """ring kiss bone basketball computer necklace drink snack book letter flower cake pen gift
ball hat bottle apple phone key""".split()

# Wang et al. (2023) IOI templates in BABA order; [B] is the subject (S), [A] the indirect
# object (IO). ABBA forms swap the first two names. The prompt stops before the final [A].
IOI_TEMPLATES = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
]

# Hanna et al. (2023) Greater-Than nouns.
GREATER_THAN_NOUNS = """abduction accord affair agreement appraisal assaults assessment attack attempts
campaign captivity case challenge chaos clash collaboration coma competition confrontation consequence
conspiracy construction consultation contact contract convention cooperation custody deal decline
decrease demonstrations development disagreement disorder dispute domination dynasty effect effort
employment endeavor engagement epidemic evaluation exchange existence expansion expedition experiments
fall fame flights friendship growth hardship hostility illness impact imprisonment improvement
incarceration increase insurgency invasion investigation journey kingdom marriage modernization
negotiation notoriety obstruction operation order outbreak outcome overhaul patrols pilgrimage plague
plan practice process program progress project pursuit quest raids reforms reign relationship
retaliation riot rise rivalry romance rule sanctions shift siege slump stature stint strikes study
test testing tests therapy tour tradition treaty trial trip unemployment voyage warfare work""".split()
GREATER_THAN_CENTURIES = list(range(11, 18))  # years 1100 … 1799

# Vig et al. (2020) templates; professions stereotyped female / male (Bolukbasi et al. 2016).
GENDER_TEMPLATES = [
    "The {} said that", "The {} yelled that", "The {} whispered that", "The {} wanted that",
    "The {} desired that", "The {} wished that", "The {} ate because", "The {} ran because",
    "The {} drove because", "The {} slept because", "The {} cried because", "The {} laughed because",
    "The {} went home because", "The {} stayed up because", "The {} was fired because",
    "The {} was promoted because", "The {} yelled because",
]
FEMALE_PROFESSIONS = """nurse secretary receptionist librarian hairdresser housekeeper nanny dancer
cashier maid stylist homemaker socialite babysitter midwife florist typist bookkeeper
dietitian therapist counselor teacher""".split()
MALE_PROFESSIONS = """mechanic carpenter engineer surgeon pilot firefighter plumber electrician janitor
sheriff soldier farmer mover guard laborer builder boss captain architect banker butcher chef
manager programmer""".split()

# (capital, country): world facts, 190 pairs.
CAPITALS = [
    ("Kabul", "Afghanistan"), ("Tirana", "Albania"), ("Algiers", "Algeria"), ("Andorra la Vella", "Andorra"),
    ("Luanda", "Angola"), ("Buenos Aires", "Argentina"), ("Yerevan", "Armenia"), ("Canberra", "Australia"),
    ("Vienna", "Austria"), ("Baku", "Azerbaijan"), ("Nassau", "Bahamas"), ("Manama", "Bahrain"),
    ("Dhaka", "Bangladesh"), ("Bridgetown", "Barbados"), ("Minsk", "Belarus"), ("Brussels", "Belgium"),
    ("Belmopan", "Belize"), ("Porto-Novo", "Benin"), ("Thimphu", "Bhutan"), ("Sucre", "Bolivia"),
    ("Sarajevo", "Bosnia and Herzegovina"), ("Gaborone", "Botswana"), ("Brasilia", "Brazil"),
    ("Bandar Seri Begawan", "Brunei"), ("Sofia", "Bulgaria"), ("Ouagadougou", "Burkina Faso"),
    ("Gitega", "Burundi"), ("Phnom Penh", "Cambodia"), ("Yaounde", "Cameroon"), ("Ottawa", "Canada"),
    ("Praia", "Cape Verde"), ("Bangui", "Central African Republic"), ("N'Djamena", "Chad"),
    ("Santiago", "Chile"), ("Beijing", "China"), ("Bogota", "Colombia"), ("Moroni", "Comoros"),
    ("Kinshasa", "Democratic Republic of the Congo"), ("Brazzaville", "Republic of the Congo"),
    ("San Jose", "Costa Rica"), ("Yamoussoukro", "Ivory Coast"), ("Zagreb", "Croatia"), ("Havana", "Cuba"),
    ("Nicosia", "Cyprus"), ("Prague", "Czech Republic"), ("Copenhagen", "Denmark"), ("Djibouti", "Djibouti"),
    ("Roseau", "Dominica"), ("Santo Domingo", "Dominican Republic"), ("Quito", "Ecuador"), ("Cairo", "Egypt"),
    ("San Salvador", "El Salvador"), ("Malabo", "Equatorial Guinea"), ("Asmara", "Eritrea"),
    ("Tallinn", "Estonia"), ("Mbabane", "Eswatini"), ("Addis Ababa", "Ethiopia"), ("Suva", "Fiji"),
    ("Helsinki", "Finland"), ("Paris", "France"), ("Libreville", "Gabon"), ("Banjul", "Gambia"),
    ("Tbilisi", "Georgia"), ("Berlin", "Germany"), ("Accra", "Ghana"), ("Athens", "Greece"),
    ("St. George's", "Grenada"), ("Guatemala City", "Guatemala"), ("Conakry", "Guinea"),
    ("Bissau", "Guinea-Bissau"), ("Georgetown", "Guyana"), ("Port-au-Prince", "Haiti"),
    ("Tegucigalpa", "Honduras"), ("Budapest", "Hungary"), ("Reykjavik", "Iceland"), ("New Delhi", "India"),
    ("Jakarta", "Indonesia"), ("Tehran", "Iran"), ("Baghdad", "Iraq"), ("Dublin", "Ireland"),
    ("Jerusalem", "Israel"), ("Rome", "Italy"), ("Kingston", "Jamaica"), ("Tokyo", "Japan"),
    ("Amman", "Jordan"), ("Astana", "Kazakhstan"), ("Nairobi", "Kenya"), ("Tarawa", "Kiribati"),
    ("Pyongyang", "North Korea"), ("Seoul", "South Korea"), ("Pristina", "Kosovo"), ("Kuwait City", "Kuwait"),
    ("Bishkek", "Kyrgyzstan"), ("Vientiane", "Laos"), ("Riga", "Latvia"), ("Beirut", "Lebanon"),
    ("Maseru", "Lesotho"), ("Monrovia", "Liberia"), ("Tripoli", "Libya"), ("Vaduz", "Liechtenstein"),
    ("Vilnius", "Lithuania"), ("Luxembourg", "Luxembourg"), ("Antananarivo", "Madagascar"),
    ("Lilongwe", "Malawi"), ("Kuala Lumpur", "Malaysia"), ("Male", "Maldives"), ("Bamako", "Mali"),
    ("Valletta", "Malta"), ("Majuro", "Marshall Islands"), ("Nouakchott", "Mauritania"),
    ("Port Louis", "Mauritius"), ("Mexico City", "Mexico"), ("Palikir", "Micronesia"),
    ("Chisinau", "Moldova"), ("Monaco", "Monaco"), ("Ulaanbaatar", "Mongolia"), ("Podgorica", "Montenegro"),
    ("Rabat", "Morocco"), ("Maputo", "Mozambique"), ("Naypyidaw", "Myanmar"), ("Windhoek", "Namibia"),
    ("Yaren", "Nauru"), ("Kathmandu", "Nepal"), ("Amsterdam", "Netherlands"), ("Wellington", "New Zealand"),
    ("Managua", "Nicaragua"), ("Niamey", "Niger"), ("Abuja", "Nigeria"), ("Skopje", "North Macedonia"),
    ("Oslo", "Norway"), ("Muscat", "Oman"), ("Islamabad", "Pakistan"), ("Ngerulmud", "Palau"),
    ("Panama City", "Panama"), ("Port Moresby", "Papua New Guinea"), ("Asuncion", "Paraguay"),
    ("Lima", "Peru"), ("Manila", "Philippines"), ("Warsaw", "Poland"), ("Lisbon", "Portugal"),
    ("Doha", "Qatar"), ("Bucharest", "Romania"), ("Moscow", "Russia"), ("Kigali", "Rwanda"),
    ("Basseterre", "Saint Kitts and Nevis"), ("Castries", "Saint Lucia"),
    ("Kingstown", "Saint Vincent and the Grenadines"), ("Apia", "Samoa"), ("San Marino", "San Marino"),
    ("Sao Tome", "Sao Tome and Principe"), ("Riyadh", "Saudi Arabia"), ("Dakar", "Senegal"),
    ("Belgrade", "Serbia"), ("Victoria", "Seychelles"), ("Freetown", "Sierra Leone"),
    ("Singapore", "Singapore"), ("Bratislava", "Slovakia"), ("Ljubljana", "Slovenia"),
    ("Honiara", "Solomon Islands"), ("Mogadishu", "Somalia"), ("Pretoria", "South Africa"),
    ("Juba", "South Sudan"), ("Madrid", "Spain"), ("Colombo", "Sri Lanka"), ("Khartoum", "Sudan"),
    ("Paramaribo", "Suriname"), ("Stockholm", "Sweden"), ("Bern", "Switzerland"), ("Damascus", "Syria"),
    ("Taipei", "Taiwan"), ("Dushanbe", "Tajikistan"), ("Dodoma", "Tanzania"), ("Bangkok", "Thailand"),
    ("Dili", "East Timor"), ("Lome", "Togo"), ("Nuku'alofa", "Tonga"), ("Port of Spain", "Trinidad and Tobago"),
    ("Tunis", "Tunisia"), ("Ankara", "Turkey"), ("Ashgabat", "Turkmenistan"), ("Funafuti", "Tuvalu"),
    ("Kampala", "Uganda"), ("Kyiv", "Ukraine"), ("Abu Dhabi", "United Arab Emirates"),
    ("London", "United Kingdom"), ("Washington", "United States"), ("Montevideo", "Uruguay"),
    ("Tashkent", "Uzbekistan"), ("Port Vila", "Vanuatu"), ("Caracas", "Venezuela"), ("Hanoi", "Vietnam"),
    ("Sanaa", "Yemen"), ("Lusaka", "Zambia"), ("Harare", "Zimbabwe"),
]

"""Word lists for the sentence grammar, grouped by meaning, and English inflection.

Every word is lower case ASCII without digits or punctuation, in US spelling, so transcripts need
no normalization before WER. Classes are chosen so that the grammar's verb-object pairs make sense
(one eats food, drinks drinks, visits places). Entry notation:

* nouns: ``word`` (regular plural) or ``word/plural``;
* verbs: ``base`` (regular), ``base+`` (doubles its last consonant: ``stop+`` -> stopped, stopping)
  or ``base/past/participle`` (irregular; ``+`` on the base still marks doubling for -ing).
"""

from __future__ import annotations

import functools

# ---------------------------------------------------------------------------------------------
# Nouns
# ---------------------------------------------------------------------------------------------
PERSON = """
teacher doctor nurse farmer driver pilot singer dancer painter writer baker butcher cook chef/chefs
waiter waitress/waitresses student pupil artist actor actress/actresses lawyer judge police_officer
soldier sailor captain guard engineer scientist dentist builder carpenter plumber mechanic gardener
hunter fisherman/fishermen firefighter postman/postmen librarian manager worker clerk banker
cashier tailor barber hairdresser photographer musician drummer guitarist pianist poet author
reporter editor professor principal coach player runner swimmer climber traveler tourist visitor
stranger neighbor friend guest host child/children boy girl baby/babies kid man/men woman/women
lady/ladies gentleman/gentlemen person/people teenager adult babysitter customer owner shopkeeper
seller buyer passenger pedestrian king queen prince princess/princesses president mayor officer
detective thief/thieves hero/heroes giant wizard farmhand shepherd miner ranger pirate knight
architect designer programmer accountant secretary/secretaries receptionist
volunteer athlete champion winner loser beginner expert leader member partner colleague boss/bosses
assistant servant cousin stranger twin tenant landlord landlady/landladies grandchild/grandchildren
cyclist surfer skater hiker camper diver jogger violinist bus_driver taxi_driver truck_driver
shop_assistant tour_guide lifeguard janitor cleaner courier messenger announcer inventor explorer
astronaut sculptor jeweler florist grocer vet nanny/nannies toddler newcomer fan referee goalkeeper
"""

RELATIVE = """
mother father sister brother aunt uncle cousin grandmother grandfather son daughter wife/wives
husband niece nephew friend neighbor roommate classmate
"""

ANIMAL = """
dog cat horse cow pig sheep/sheep goat chicken duck goose/geese rabbit mouse/mice rat hamster
parrot owl eagle hawk crow pigeon swan robin sparrow penguin turtle frog snake lizard fish/fish
shark whale dolphin seal octopus/octopuses crab lobster bee/bees ant spider butterfly/butterflies
monkey/monkeys gorilla elephant giraffe zebra lion tiger bear wolf/wolves fox/foxes deer/deer
moose/moose squirrel donkey/donkeys camel kangaroo/kangaroos koala panda hippo/hippos rhino/rhinos
bat beaver otter raccoon hedgehog puppy/puppies kitten calf/calves lamb pony/ponies bull ox/oxen
hen rooster turkey peacock flamingo pelican seagull ostrich/ostriches woodpecker bluebird
canary/canaries goldfish/goldfish salmon/salmon trout/trout jellyfish/jellyfish starfish/starfish snail worm
caterpillar beetle ladybug grasshopper cricket mosquito/mosquitoes dragonfly/dragonflies cheetah leopard
jaguar buffalo/buffaloes chipmunk mole skunk badger weasel ferret llama alpaca reindeer/reindeer
polar_bear crocodile alligator toad tortoise
"""

FOOD = """
apple banana orange pear peach/peaches plum cherry/cherries lemon lime grape melon mango/mangoes
strawberry/strawberries tomato/tomatoes potato/potatoes carrot onion pepper cucumber pumpkin
cabbage egg sandwich/sandwiches cookie cake pie muffin biscuit cracker pancake waffle sausage
burger pizza taco/tacos bagel donut pretzel cupcake candy/candies lollipop salad omelet
steak chicken_wing peanut walnut almond olive avocado coconut pineapple watermelon
apricot blueberry/blueberries raspberry/raspberries kiwi grapefruit papaya fig nectarine tangerine
eggplant radish/radishes beet turnip mushroom sweet_potato/sweet_potatoes croissant scone brownie
hot_dog meatball dumpling burrito/burritos spring_roll pickle hamburger cheeseburger pastry/pastries
tart bun apple_pie cheesecake
"""

FOOD_MASS = """
bread rice soup pasta cheese butter meat fish chicken beef pork bacon ham salad cereal porridge
honey jam yogurt chocolate popcorn spinach broccoli corn garlic flour sugar salt pepper toast
cream ice_cream pudding noodles beans fruit lettuce celery sauce ketchup mustard oatmeal
lasagna spaghetti macaroni curry stew chili tuna salmon garlic_bread cornbread gravy
mayonnaise vinegar olive_oil syrup maple_syrup peanut_butter cinnamon fried_rice ginger tofu sushi
salsa granola
"""

DRINK = """
water coffee tea milk juice lemonade soda cocoa wine beer orange_juice apple_juice hot_chocolate

iced_tea green_tea herbal_tea sparkling_water mineral_water smoothie milkshake cider
tomato_juice grape_juice coconut_water chocolate_milk espresso cappuccino
"""

OBJECT = """
book pen pencil key bag box/boxes bottle cup mug glass/glasses plate bowl spoon fork knife/knives
phone camera laptop computer radio/radios clock watch/watches lamp candle umbrella hat coat jacket
scarf/scarves glove shoe boot sock shirt dress/dresses skirt sweater belt ring necklace bracelet
wallet purse ticket letter card map notebook newspaper magazine envelope stamp coin toy ball kite
doll puzzle game blanket pillow towel brush/brushes comb mirror basket bucket broom hammer saw
drill ladder rope chain/chains net shovel rake axe tool screwdriver wrench/wrenches nail candle
battery/batteries cable charger remote paintbrush/paintbrushes crayon marker ruler eraser stapler
calculator backpack suitcase briefcase folder file photo/photos picture poster
painting guitar piano/pianos violin drum flute trumpet helmet medal trophy/trophies flag balloon
present gift package parcel jar can pan pot kettle teapot tray napkin tablecloth vase/vases
flowerpot plant rug carpet curtain blind bell whistle compass flashlight lantern tent sleeping_bag
fishing_rod wheel tire engine button zipper needle thread ribbon sticker label
spoon ladle sponge toothbrush/toothbrushes hairbrush/hairbrushes
headphone speaker microphone keyboard screen printer tablet charger cushion stool
calendar diary/diaries dictionary/dictionaries novel textbook comic cookbook album sketchbook
passport receipt coupon badge keychain padlock handbag lunchbox/lunchboxes water_bottle flask jug
pitcher teacup saucer cutting_board frying_pan saucepan grater whisk peeler apron doormat hanger
laundry_basket iron vacuum_cleaner fan heater quilt mattress/mattresses bookmark telescope microscope
globe chalk whiteboard sign banner tape paper_clip thumbtack pin sewing_machine cap mitten slipper
sandal sneaker necktie bow_tie earring brooch/brooches wristwatch/wristwatches hairpin crown wand
shield sword arrow lantern torch/torches skateboard surfboard snowboard sled paddle oar anchor cage
leash/leashes collar hose sprinkler watering_can wheelbarrow statue sculpture alarm_clock doorbell
light_bulb mailbox/mailboxes trash_can crate barrel sack pouch/pouches snow_globe music_box/music_boxes
jigsaw_puzzle chess_set board_game marble teddy_bear robot drone toy_car toy_train paper_plane
"""

FURNITURE = """
table desk chair sofa couch/couches bed shelf/shelves cupboard counter bench/benches stool
dresser windowsill floor ground step porch/porches cabinet drawer fridge stove oven sink
"""

VEHICLE = """
car bus/buses train truck bicycle bike motorcycle scooter boat ship plane helicopter taxi/taxis
van tractor subway ferry/ferries canoe sailboat tram wagon rocket
"""

PLACE = """
park school library museum/museums market supermarket store shop bakery/bakeries restaurant cafe
hospital station airport office bank/banks post_office hotel beach/beaches farm garden kitchen
bedroom bathroom living_room basement attic garage yard playground zoo/zoos theater cinema
stadium gym church/churches temple castle palace village/villages town city/cities harbor
bridge tower factory/factories warehouse studio/studios classroom hallway lobby/lobbies
office_building parking_lot gas_station bus_stop train_station fire_station police_station
bookstore pharmacy/pharmacies clinic hall campus/campuses square street road avenue highway
corner cottage cabin barn/barns field meadow orchard vineyard camp campsite island lake pond
forest jungle desert valley/valleys mountain hill cave shore riverbank countryside neighborhood
apartment house/houses home garden_center flower_shop toy_store pet_store hardware_store
shopping_mall mall concert_hall art_gallery gallery/galleries laboratory/laboratories
swimming_pool pool skating_rink tennis_court basketball_court soccer_field golf_course marina pier
dock lighthouse windmill greenhouse/greenhouses nursery/nurseries kindergarten college university/universities
courthouse/courthouses city_hall town_hall embassy/embassies hostel motel inn resort market_square
marketplace fountain plaza monument chapel cathedral butcher_shop candy_store shoe_store department_store
grocery_store corner_shop laundromat barbershop salon shed tree_house/tree_houses balcony/balconies
terrace rooftop patio/patios dining_room conference_room waiting_room locker_room cafeteria auditorium
aquarium planetarium observatory/observatories national_park campground summit riverside seaside
coast bay harbor suburb tunnel ranch/ranches mill
"""

NATURE = """
river tree flower rock stone leaf/leaves branch/branches bush/bushes grass cloud star moon sun
wave hill mountain lake pond stream waterfall beach/beaches island sky/skies rainbow storm wind
snowflake puddle sand shell feather nest seed root log fence path trail garden field
ocean sea cliff/cliffs volcano/volcanoes glacier canyon meadow pebble breeze snowman/snowmen
icicle acorn pine_tree oak_tree maple_tree palm_tree vine thorn petal twig pine_cone
"""

IDEA = """
idea story/stories plan problem question answer reason rule secret joke song poem letter message
report lesson speech/speeches news/news word name address/addresses number recipe instruction
direction mistake decision choice opinion dream promise warning advice/advice excuse rumor truth
lie riddle puzzle fact detail schedule list password email note review essay article chapter
sentence paragraph phone_number plot title memory/memories theory/theories lyric proverb
"""

EVENT = """
party/parties meeting concert game match/matches show movie film play trip/trips holiday/holidays
vacation journey/journeys adventure lecture class/classes exam test interview contest race wedding
picnic festival parade dinner lunch breakfast/breakfasts ceremony/ceremonies celebration workshop
conference tournament barbecue rehearsal performance lesson course speech/speeches visit tour
"""

FIRST_NAME = """
james john robert michael william david richard joseph thomas charles daniel matthew anthony mark
paul steven andrew joshua kevin brian george edward ronald timothy jason jeffrey ryan jacob gary
nicholas eric jonathan stephen larry justin scott brandon benjamin samuel gregory frank alexander
raymond patrick jack dennis jerry tyler aaron henry adam douglas nathan peter zachary kyle walter
harold jeremy ethan carl keith roger gerald christian terry sean arthur austin noah lawrence
jesse joe bryan billy jordan albert dylan bruce willie gabriel alan juan logan wayne ralph roy
eugene randy vincent russell louis philip bobby johnny bradley mary patricia jennifer linda
elizabeth barbara susan jessica sarah karen nancy lisa betty margaret sandra ashley kimberly emily
donna michelle dorothy carol amanda melissa deborah stephanie rebecca sharon laura cynthia kathleen
amy shirley angela helen anna brenda pamela nicole emma samantha katherine christine debra rachel
catherine carolyn janet ruth maria heather diane virginia julie joyce victoria olivia kelly christina
lauren joan evelyn judith megan cheryl andrea hannah martha jacqueline frances gloria ann teresa
kathryn sara janice jean alice madison doris abigail julia judy grace denise amber marilyn beverly
danielle theresa sophia marie diana brittany natalie isabella charlotte rose alexis kayla lucy
oliver leo oscar max felix hugo toby alfie archie harry freddie theo sam ben tom tim dan
lily ella chloe mia zoe ruby ivy daisy rosie poppy molly holly millie nina tina vera clara iris
ahmed ali omar fatima aisha yusuf hassan leila carlos diego pablo sofia lucia mateo javier
elena ivan dmitri olga anya hiroshi yuki kenji akira mei wei chen priya ravi arjun anil sunita kwame
amara chidi zara nadia samir rosa marco luca giulia francesca pierre claire louise henri jacques hans
greta lars ingrid sven astrid liam finn connor declan
"""

SURNAME = """
smith johnson williams brown jones miller davis wilson anderson taylor thomas moore martin jackson
thompson white harris clark lewis robinson walker young allen king wright scott green baker adams
nelson hill campbell mitchell roberts carter phillips evans turner parker collins edwards stewart
morris murphy cook rogers morgan cooper peterson bailey reed kelly howard cox ward richardson watson
brooks wood james bennett gray hughes price sanders myers long ross foster powell jenkins perry
russell sullivan bell coleman butler henderson barnes fisher vasquez simmons graham marshall owens
harrison gibson wallace west cole hayes bryant ellis stevens murray ford hamilton palmer fox wells
"""

CITY = """
london paris berlin madrid rome vienna prague dublin lisbon amsterdam brussels oslo stockholm
helsinki copenhagen warsaw athens istanbul cairo nairobi lagos tokyo kyoto osaka seoul beijing
shanghai delhi mumbai bangkok singapore sydney melbourne auckland toronto montreal vancouver boston
chicago seattle denver dallas houston miami atlanta phoenix detroit portland nashville memphis
orlando austin baltimore philadelphia pittsburgh cleveland manchester liverpool glasgow edinburgh
cardiff bristol oxford cambridge york brighton leeds sheffield venice florence milan naples geneva
zurich munich hamburg lyon marseille barcelona seville valencia porto budapest krakow moscow lima
santiago bogota havana quebec ottawa calgary chicago hollywood alaska hawaii texas florida
california oregon nevada arizona ohio georgia virginia vermont maine kansas iowa
"""

COUNTRY = """
france spain italy germany austria poland sweden norway finland denmark ireland scotland wales
england canada mexico brazil chile peru argentina colombia cuba jamaica egypt kenya nigeria
morocco india china japan korea vietnam thailand indonesia australia iceland greece turkey russia
portugal belgium switzerland holland hungary romania ukraine israel jordan nepal tibet mongolia
"""

# ---------------------------------------------------------------------------------------------
# Verbs, by the class of their object
# ---------------------------------------------------------------------------------------------
VERB_FOOD = """
eat/ate/eaten cook bake buy/bought/bought sell/sold/sold cut+/cut/cut share order taste wash
prepare bring/brought/brought carry pack slice chop+ serve finish want need like love hate enjoy
grab+ pick peel heat warm split+/split/split try find/found/found steal/stole/stolen hide/hid/hidden
drop+ choose/chose/chosen offer deliver
"""

VERB_DRINK = """
drink/drank/drunk pour spill heat make/made/made want order buy/bought/bought
bring/brought/brought share finish sip+ taste serve offer carry need like love enjoy
"""

VERB_THING = """
take/took/taken find/found/found lose/lost/lost buy/bought/bought sell/sold/sold carry open close
clean fix paint move hold/held/held drop+ hide/hid/hidden keep/kept/kept borrow need want like use
bring/brought/brought pack check choose/chose/chosen order repair break/broke/broken build/built/built
make/made/made wrap+ unwrap+ wash fold lift push pull grab+ throw/threw/thrown catch/caught/caught
drag+ pick search examine return replace forget+/forgot/forgotten remember
notice touch leave/left/left steal/stole/stolen collect count deliver decorate
design draw/drew/drawn fill measure mend polish print protect shake/shook/shaken
sort test weigh kick lock unlock lend/lent/lent send/sent/sent show/showed/shown give/gave/given
tear/tore/torn wear/wore/worn bend/bent/bent bury hang/hung/hung stack rinse dry iron
scrub+ sweep/swept/swept admire inspect label scan+ recycle unpack load empty trade rent install
charge shake/shook/shaken spin+/spun/spun
"""

VERB_ANIMAL_ACTION = """
sleep/slept/slept run+/ran/run jump swim+/swam/swum walk climb sit+/sat/sat rest wait hide/hid/hidden
play eat/ate/eaten drink/drank/drunk hop+ crawl dig+/dug/dug hunt sniff scratch stare yawn stretch
wander splash hurry shiver
"""

VERB_GIVE = """
give/gave/given send/sent/sent show/showed/shown lend/lent/lent bring/brought/brought hand offer
sell/sold/sold pass throw/threw/thrown mail read/read/read teach/taught/taught
"""

VERB_PERSON = """
meet/met/met call help visit thank follow invite remember forget+/forgot/forgotten teach/taught/taught
ask pay/paid/paid greet miss watch join trust warn hug+ interview
encourage surprise phone email thank drive/drove/driven hire introduce comfort blame forgive/forgave/forgiven
wake/woke/woken find/found/found see/saw/seen hear/heard/heard like love admire respect
understand/understood/understood believe recognize congratulate protect rescue support tell/told/told
kiss tease chase praise scold annoy amuse bother disturb inform remind convince persuade
guide lead/led/led welcome applaud tickle
"""

VERB_PLACE = """
visit leave/left/left clean paint explore reach enter find/found/found see/saw/seen love like
photograph decorate describe guard search tour cross build/built/built
"""

VERB_IDEA = """
explain discuss remember forget+/forgot/forgotten write/wrote/written read/read/read tell/told/told
hear/heard/heard share finish start plan+ understand/understood/understood describe repeat change
record learn practice forget+/forgot/forgotten like love hate enjoy check
prepare review miss announce imagine ignore mention organize
spell copy translate memorize sing/sang/sung solve answer invent edit publish print type
delete save send/sent/sent receive accept reject post summarize criticize
"""

VERB_ANIMAL = """
feed/fed/fed watch follow chase catch/caught/caught wash brush
photograph draw/drew/drawn pet+ walk hear/heard/heard see/saw/seen find/found/found help rescue
train carry hold/held/held scare frighten count notice love like
"""

VERB_INTRANSITIVE = """
sleep/slept/slept laugh smile wait sing/sang/sung dance swim+/swam/swum work play rest cry
travel talk listen shout whisper cheer clap+ jump run+/ran/run walk climb
sit+/sat/sat stand/stood/stood fall/fell/fallen arrive return relax study cook read/read/read
write/wrote/written paint draw/drew/drawn practice exercise stretch yawn nod+
wave shiver hurry wander agree
sneeze cough giggle blink frown sigh snore hum+ whistle knock float sink/sank/sunk
glow pray vote complain apologize celebrate win+/won/won camp ski skate surf hike shop+ sweat
"""

VERB_MOTION = """
go/went/gone walk run+/ran/run drive/drove/driven ride/rode/ridden travel fly/flew/flown hurry
return move rush swim+/swam/swum sail jog+ cycle race march
skip+ crawl dash stroll head drift sprint limp hike climb skate ski paddle commute
"""

VERB_INFINITIVE = """
want need hope plan+ try decide forget+/forgot/forgotten promise agree refuse like love hate
prefer+/preferred/preferred learn offer choose/chose/chosen prepare expect
remember wish manage intend attempt fail arrange volunteer hesitate pretend continue
"""

VERB_GERUND = """
enjoy finish start stop+ keep/kept/kept avoid like love hate practice begin+/began/begun miss
imagine consider suggest recommend quit+/quit/quit mind regret+ resume delay postpone
appreciate dislike risk
"""

VERB_SAY = """
say/said/said think/thought/thought know/knew/known believe hope feel/felt/felt hear/heard/heard
notice promise explain remember agree forget+/forgot/forgotten realize decide
dream mention guess suggest admit+ insist
announce claim reply shout whisper complain argue confirm report discover learn
read/read/read write/wrote/written pretend imagine expect doubt fear understand/understood/understood
"""

# ---------------------------------------------------------------------------------------------
# Adjectives and adverbs
# ---------------------------------------------------------------------------------------------
ADJ_THING = """
big small large tiny huge heavy light old new shiny dusty dirty clean broken expensive cheap
wooden plastic metal glass paper leather cotton woolen silver golden soft hard smooth rough
sharp round square long short tall thin thick wide narrow empty full fragile strong simple fancy
modern ancient beautiful ugly strange useful useless favorite special rare common familiar
colorful bright dark warm cold wet dry sticky heavy spare extra tidy messy lovely lucky famous
brand_new enormous miniature plain striped spotted bent cracked torn folded wrinkled polished
rusty fluffy furry bumpy slippery hollow solid oval flat curved crooked loose tight handmade valuable
precious delicate sturdy portable electric digital antique vintage fake real lost missing borrowed
stolen matching
"""

ADJ_PERSON = """
happy sad tired hungry thirsty busy kind brave quiet young old angry friendly polite honest
clever funny serious nervous calm proud shy lonely cheerful curious careful patient gentle rich
poor tall short strong sleepy lazy excited worried bored surprised confused grateful helpful
famous popular lucky talented generous clumsy quick slow sick healthy strict wise silly noisy
grumpy jolly careless thoughtful sensible cautious eager anxious annoyed amazed delighted
disappointed embarrassed frightened puzzled relaxed relieved shocked upset energetic adventurous
ambitious creative elegant fearless humble loyal modest optimistic reliable sincere smart stubborn
charming
"""

ADJ_ANIMAL = """
little big young old hungry sleepy lazy friendly noisy curious clever shy tiny fat thin wild tame
brave gentle playful fluffy spotted striped clumsy quick slow happy grumpy hairy cute
"""

ADJ_PLACE = """
busy quiet crowded empty beautiful famous dark bright warm cold cozy tiny huge old new modern
ancient peaceful noisy clean dirty lovely strange lonely popular small large local nearby
wonderful quiet secret hidden sunny shady
spacious narrow muddy rocky sandy snowy icy windy foggy misty green lively charming historic
remote distant deserted haunted magical tidy messy elegant fancy expensive colorful gloomy
"""

ADJ_FOOD = """
fresh warm hot cold sweet sour spicy salty tasty delicious crunchy soft ripe juicy frozen homemade
baked fried roasted boiled smoked sliced chopped leftover cheap expensive healthy simple
bitter bland creamy cheesy crispy chewy greasy stale burnt raw tender fluffy rich light
organic vegetarian sugary buttery
"""

ADJ_IDEA = """
good bad great simple clever strange funny sad long short new old important interesting boring
difficult easy secret famous exciting surprising silly wonderful terrible brilliant
complicated confusing obvious clear useful helpful perfect ridiculous original unusual
honest private personal official recent popular ancient
"""

ADJ_WEATHER = """
sunny rainy cloudy windy foggy snowy stormy warm cold hot cool chilly freezing bright gray
humid pleasant lovely beautiful
"""

COLOR = """
red blue green yellow orange purple pink brown black white gray silver golden
"""

ADVERB_MANNER = """
quickly slowly carefully quietly loudly happily sadly gently softly easily badly politely
calmly patiently proudly nervously suddenly finally eagerly angrily bravely brightly cheerfully
clearly closely correctly early late fast hard honestly kindly lazily neatly openly perfectly
quietly safely seriously silently simply smoothly steadily strangely together
warmly well wisely
accidentally anxiously awkwardly boldly briskly busily carelessly casually cautiously
clumsily curiously deliberately elegantly enthusiastically fiercely foolishly freely generously gladly
gracefully gratefully greedily hastily heavily hopefully hungrily innocently joyfully lightly loosely
merrily mysteriously naturally noisily obediently playfully promptly properly rapidly readily
recklessly regularly reluctantly rudely sharply sleepily swiftly tenderly thoughtfully tightly truly
urgently weakly wearily wildly
"""

ADVERB_FREQUENCY = """
always often sometimes usually never rarely seldom
"""

DEGREE = """
very really quite rather extremely fairly so too incredibly unusually
"""

NUMBER = """
two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty
a_hundred
"""

WEEKDAY = """
monday tuesday wednesday thursday friday saturday sunday
"""

MONTH = """
january february march april may june july august september october november december
"""

PART_OF_DAY = """
morning afternoon evening night
"""

SEASON = """
spring summer autumn winter
"""

CLOCK = """
one two three four five six seven eight nine ten eleven twelve
"""


def words(block: str) -> tuple[str, ...]:
    """Splits a word block; ``_`` joins multi-word entries (``living_room`` -> ``living room``)."""
    return tuple(dict.fromkeys(entry.replace("_", " ") for entry in block.split()))


# ---------------------------------------------------------------------------------------------
# Inflection
# ---------------------------------------------------------------------------------------------
_VOWELS = set("aeiou")


def _ends_with_consonant_y(word: str) -> bool:
    return len(word) > 1 and word[-1] == "y" and word[-2] not in _VOWELS


def _sibilant(word: str) -> bool:
    return word.endswith(("s", "x", "z", "ch", "sh"))


def plural(noun: str) -> str:
    """Regular English plural of the last word of ``noun``."""
    if _sibilant(noun):
        return noun + "es"
    if _ends_with_consonant_y(noun):
        return noun[:-1] + "ies"
    return noun + "s"


@functools.lru_cache(maxsize=None)
def noun_forms(entry: str) -> dict[str, str]:
    """``{"sg": ..., "pl": ...}`` from a noun entry (``knife/knives`` or ``cat``)."""
    singular, _, irregular = entry.partition("/")
    return {"sg": singular, "pl": irregular or plural(singular)}


_IRREGULAR_THIRD_PERSON = {"have": "has", "do": "does", "go": "goes"}


def _third_person(verb: str) -> str:
    if verb in _IRREGULAR_THIRD_PERSON:
        return _IRREGULAR_THIRD_PERSON[verb]
    if _sibilant(verb):
        return verb + "es"
    if _ends_with_consonant_y(verb):
        return verb[:-1] + "ies"
    return verb + "s"


def _past(verb: str, doubles: bool) -> str:
    if doubles:
        return verb + verb[-1] + "ed"
    if verb.endswith("e"):
        return verb + "d"
    if _ends_with_consonant_y(verb):
        return verb[:-1] + "ied"
    return verb + "ed"


def _gerund(verb: str, doubles: bool) -> str:
    if doubles:
        return verb + verb[-1] + "ing"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and len(verb) > 2:
        return verb[:-1] + "ing"
    return verb + "ing"


@functools.lru_cache(maxsize=None)
def verb_forms(entry: str) -> dict[str, str]:
    """``{"base", "s", "past", "pp", "ing"}`` from a verb entry (see the module docstring)."""
    parts = entry.split("/")
    base = parts[0]
    doubles = base.endswith("+")
    base = base.rstrip("+")
    if len(parts) == 3:
        past, participle = parts[1], parts[2]
    elif len(parts) == 1:
        past = participle = _past(base, doubles)
    else:
        raise ValueError(f"verb entry {entry!r}: expected 'base' or 'base/past/participle'")
    return {"base": base, "s": _third_person(base), "past": past, "pp": participle, "ing": _gerund(base, doubles)}


# Words spelled with a vowel but spoken with a consonant first ("a unicorn"), and the reverse.
_CONSONANT_SOUND = ("uni", "use", "usu", "uten", "eu", "one", "once", "ukul")
_VOWEL_SOUND = ("hour", "honest", "honor", "heir")


def indefinite_article(next_word: str) -> str:
    """``a`` or ``an`` for the word that follows."""
    if next_word.startswith(_VOWEL_SOUND):
        return "an"
    if next_word.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if next_word[:1] in _VOWELS else "a"

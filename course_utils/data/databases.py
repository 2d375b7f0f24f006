"""The 44 SQL databases of the text-to-SQL task (36 for training, 8 held out, structurally new)."""

from __future__ import annotations


from .tables import Database, _db, table


T = table  # the specs below read as a list of tables
DATABASES: tuple[Database, ...] = (
    # --- one table ---------------------------------------------------------------------------------
    _db("astronomy", T("planets", "planet", 20, "planet_id key; name label Kepler Gliese Ross Wolf Tau/11b 22c 35d 7e"
                       "; kind cat Rocky|Gas giant|Ice giant|Water world (planet type); moons int 0..90"
                       "; radius_km int 2000..90000 (radius); discovered date 1995..2023 (discovery date)"
                       "; mass real? 0.1..30.0")),
    _db("cookbook", T("recipes", "recipe", 24, "recipe_id key; title label Spicy Creamy Quick Smoky Lemon Garlic/"
                      "Noodles Curry Salad Soup Tart Stew; cuisine cat Thai|Italian|Mexican|Indian|French"
                      "; prep_minutes int 5..120 (preparation time); calories int 150..1200; rating real 1.0..5.0"
                      "; published date 2015..2023 (publication date)")),
    _db("peaks", T("peaks", "mountain", 20, "peak_id key; peak_name label Mount Cerro Pico Monte/Aster Boreal Cinder "
                   "Dusk Ember Frost; massif cat Andes|Alps|Rockies|Atlas (mountain range); height_m int 1500..8800 "
                   "(height); prominence int 300..4000; first_ascent date? 1850..2010 (first ascent)")),
    _db("podcasts", T("podcasts", "podcast", 22, "podcast_id key; show label Morning Deep Weekly Open Hidden/Signal "
                      "Minds Ledger Frontier Table; genre cat Comedy|News|Science|History|Sports; episodes int 10..600 "
                      "(number of episodes); avg_minutes real 12.0..95.0 (average length); launched date 2008..2022 "
                      "(launch date); host text? person")),
    _db("used_cars", T("listings", "car", 24, "listing_id key; model label Corsa Vela Astra Nova Terra Lumo/GT LX SE "
                       "Sport; make cat Fiat|Kia|Ford|Seat|Mazda (manufacturer); price_usd int 4000..45000 (price)"
                       "; mileage_km int 1000..180000 (mileage); mpg real 20.0..60.0 (fuel economy)"
                       "; registered date 2008..2022 (registration date)")),
    _db("app_store", T("apps", "app", 24, "app_id key; app_name label Pixel Swift Calm Zen Snap Bright/Notes Budget "
                       "Runner Chef Atlas; category cat Games|Health|Finance|Travel|Education; downloads int "
                       "1000..900000; rating real 1.0..5.0; released date 2014..2023 (release date)"
                       "; price real? 0.99..9.99")),
    _db("rivers", T("rivers", "river", 20, "river_id key; river label Amber Silver Long Black White/Creek Run Water "
                    "Fork; continent cat Africa|Asia|Europe|South America; length_km int 300..6700 (length)"
                    "; discharge real 100.0..9000.0 (flow rate); surveyed date 1990..2020 (survey date)")),
    # --- two tables ----------------------------------------------------------------------------------
    _db("company",
        T("employees", "employee", 30, "emp_id key; name label person; dept cat Sales|Engineering|Finance|Support|"
          "Legal (department); salary int 2000..9000; hired date 2012..2023 (hire date); bonus int? 100..2000"
          "; office_id fk offices"),
        T("offices", "office", 8, "office_id key; city label Berlin|Lagos|Lima|Osaka|Quito|Perth|Oslo|Pune"
          "; region cat EMEA|APAC|Americas; opened date 1990..2015 (opening date); floors int 1..40")),
    _db("library",
        T("books", "book", 28, "book_code code BK-{n}; title label Silent Lost Red Hidden Last Broken/River Garden "
          "Crown Letter Winter; genre cat Fantasy|History|Poetry|Science|Crime; pages int 80..900"
          "; published date 1950..2023 (publication date); author_id fk authors"),
        T("authors", "author", 8, "author_id key; full_name label person; country cat France|India|Canada|Kenya"
          "; born int 1920..1995 (birth year); died int? 1960..2023 (death year)")),
    _db("cinema",
        T("movies", "movie", 28, "movie_id key; title label Night Steel Blue Paper Iron Quiet/Harbor Signal Empire "
          "Orbit Tide; rating cat G|PG|R|NC17 (age rating); minutes int 70..200 (running time)"
          "; budget real 1.0..250.0 (budget in millions); studio fk studios"),
        T("studios", "studio", 7, "studio_id key; studio_name label Apex|Lumen|Northstar|Redwood|Vista|Orchid|Comet"
          "; city cat Mumbai|Paris|Austin|Seoul; founded int 1910..2010 (founding year)")),
    _db("shop",
        T("products", "product", 28, "sku code P-{n}; product label Smart Mini Eco Pro Classic Ultra/Lamp Kettle Chair "
          "Drone Racket; category cat Garden|Kitchen|Toys|Office|Sports; price real 1.00..500.00"
          "; stock int 0..300 (units in stock); supplier_id fk suppliers"),
        T("suppliers", "supplier", 8, "supplier_id key; name label Acme|Borealis|Cobalt|Dynamo|Evergreen|Fjord|Granite|"
          "Helix; region cat North|South|East|West; rating real 1.0..5.0; contract_end date? 2024..2027 "
          "(contract end date)")),
    _db("clinic",
        T("patients", "patient", 30, "patient_id key; full_name label person; blood_type cat A|B|AB|O (blood group)"
          "; birth_date date 1940..2015; weight_kg real 3.0..120.0 (weight); discharged date? 2023..2024 "
          "(discharge date); doctor_id fk doctors"),
        T("doctors", "doctor", 8, "doctor_id key; name label person; specialty cat Cardiology|Pediatrics|Oncology|"
          "Neurology; years_exp int 1..40 (years of experience)")),
    _db("football",
        T("players", "player", 30, "player_id key; name label person; position cat Goalkeeper|Defender|Midfielder|"
          "Forward; goals int 0..60; height_cm int 160..205 (height); team_code fk teams"),
        T("teams", "team", 8, "team_code code FCA|RVB|LSC|OLM|PKT|DNV|STG|WRX; team_name label Falcons|Rovers|Lions|"
          "Olympic|Pirates|Dynamo|Strikers|Wanderers; city cat Porto|Leeds|Lyon|Turin; founded int 1880..1990 "
          "(founding year)")),
    _db("garden",
        T("plants", "plant", 24, "plant_id key; common_name label Blue Golden Wild Dwarf Giant/Fern Poppy Sage Lily "
          "Aster; family cat Asteraceae|Lamiaceae|Liliaceae|Rosaceae; height_cm int 5..300 (height)"
          "; water_ml int 50..2000 (daily water); planted date 2018..2023 (planting date); bed_no fk beds (bed)"),
        T("beds", "bed", 6, "bed_no key; label label North Bed|South Bed|East Bed|West Bed|Pond Bed|Herb Bed"
          "; exposure cat Full sun|Partial shade|Deep shade (light); area_m2 real 1.5..20.0 (area)")),
    _db("museum",
        T("artworks", "artwork", 26, "art_id key; title label Still Blue Silent Golden Quiet Late/Harbour Portrait Garden "
          "Morning Study; medium cat Oil|Watercolour|Bronze|Marble|Ink; year_made int 1600..2020 (year)"
          "; value int 5000..900000 (estimated value); on_loan_to text? Louvre|Prado|Tate|Uffizi"
          "; made_by fk artists (artist)"),
        T("artists", "artist", 8, "artist_id key; name label person; nationality cat Dutch|Spanish|Japanese|Mexican"
          "; born int 1550..1990 (birth year)")),
    _db("fleet",
        T("trucks", "truck", 24, "plate code TRK-{n}; model label Hauler Titan Ranger Atlas/100 200 300 400 500 600"
          "; fuel cat Diesel|Electric|Hybrid (fuel type); capacity_t real 1.5..40.0 (capacity in tonnes)"
          "; odometer int 10000..600000 (mileage); last_service date 2022..2024 (last service date)"
          "; depot fk depots"),
        T("depots", "depot", 6, "depot_id key; depot_name label Northgate|Riverside|Hilltop|Dockside|Eastfield|Westend"
          "; region cat North|South|Central; bays int 4..40 (loading bays)")),
    _db("gym",
        T("members", "member", 28, "member_id key; name label person; plan cat Basic|Plus|Premium (membership plan)"
          "; age int 16..80; joined date 2015..2024 (join date); cancelled date? 2020..2024 (cancellation date)"
          "; trainer_id fk trainers"),
        T("trainers", "trainer", 6, "trainer_id key; name label person; speciality cat Yoga|Strength|Cardio"
          "; hourly_rate real 20.0..90.0 (hourly rate)")),
    _db("hotel",
        T("stays", "stay", 28, "stay_id key; booking_code label BKG-{n} (booking code); room_type cat Single|Double|"
          "Suite (room type); nights int 1..45 (number of nights); checked_in date 2023..2024 (check-in date)"
          "; spend real? 40.0..3000.0 (amount spent); guest fk guests"),
        T("guests", "guest", 8, "guest_key key; guest label person; nationality cat Irish|Dutch|Greek|Thai"
          "; loyalty_points int 0..50000 (loyalty points)")),
    _db("zoo",
        T("animals", "animal", 26, "animal_id key; animal_name label Big Little Old Young Shy Swift/Tala Ruma Kito "
          "Zuri Baku; species cat Lion|Zebra|Otter|Lemur|Tapir; mass_kg real 2.0..900.0 (body mass)"
          "; arrived date 2005..2023 (arrival date); age_years int 1..40 (age in years); pen fk enclosures (enclosure)"),
        T("enclosures", "enclosure", 6, "pen_code code EN-{n}; habitat label Savanna|Rainforest|Riverbank|Highlands|"
          "Night House|Wetland; climate cat Tropical|Temperate|Arid; area_m2 real 200.0..9000.0 (area)")),
    # --- three tables --------------------------------------------------------------------------------
    _db("school",
        T("students", "student", 30, "student_id key; name label person; major cat Biology|Physics|Art|Economics|"
          "Music; gpa real 1.50..4.00 (grade point average); enrolled date 2018..2023 (enrolment date)"
          "; advisor_id fk advisors"),
        T("advisors", "advisor", 8, "advisor_id key; name label person; title cat Lecturer|Professor|Dean"
          "; office_hours int? 1..10 (weekly office hours); department fk departments"),
        T("departments", "department", 5, "dept_id key; dept_name label Biology|Physics|Art|Economics|Music"
          "; building cat North Hall|Main Hall|Annex; budget int 100000..900000")),
    _db("music",
        T("songs", "song", 30, "song_id key; title label Golden Electric Lonely Wild Northern Sweet/Road Heart Storm "
          "Dance Echo; genre cat Jazz|Rock|Folk|Pop|Blues; plays int 100..99000; seconds int 90..480 "
          "(length in seconds); album_id fk albums"),
        T("albums", "album", 10, "album_id key; album_title label Blue Nights|Open Roads|Paper Moons|Second Sun|"
          "Low Tide|Static|Glass Houses|Far North|Echo Park|Fireworks; format cat Vinyl|CD|Digital"
          "; released date 1970..2023 (release date); producer text? person; artist_id fk artists"),
        T("artists", "artist", 6, "artist_id key; name label person; country cat Brazil|Ireland|Japan|Ghana")),
    _db("airline",
        T("flights", "flight", 30, "flight_id key; flight_code label AX BY CZ DW EV/101 202 303 404 505 606"
          "; status cat OnTime|Delayed|Cancelled (flight status); distance_km int 200..9000 (distance)"
          "; departure date 2024..2024 (departure date); aircraft_id fk aircraft; origin fk airports "
          "(origin airport)"),
        T("aircraft", "aircraft", 6, "aircraft_id key; model label A320|B737|E190|A350|B787|ATR72"
          "; maker cat Airbus|Boeing|Embraer (manufacturer); seats int 70..350", nouns="aircraft"),
        T("airports", "airport", 8, "code code LIM|OSL|CAI|NRT|YYZ|MEX|BCN|DEL; name label Lima|Oslo|Cairo|Tokyo|"
          "Toronto|Mexico City|Barcelona|Delhi; region cat Americas|Europe|Asia|Africa")),
    _db("retail",
        T("orders", "order", 30, "order_id key; order_ref label ORD-{n}; status cat Pending|Shipped|Delivered|"
          "Returned; total real 5.00..900.00 (order total); placed date 2023..2024 (order date)"
          "; buyer_id fk customers (customer); store_id fk stores"),
        T("customers", "customer", 10, "customer_id key; full_name label person; city cat Leeds|Cork|Gdansk|Porto"
          "; loyalty_tier text? Silver|Gold|Platinum (loyalty tier)"),
        T("stores", "store", 5, "store_id key; store_name label Central|Harbour|Airport|Mall|Station"
          "; region cat North|South; opened date 2000..2020 (opening date)")),
    _db("conference",
        T("talks", "talk", 28, "talk_id key; title label Scaling Testing Securing Teaching Debugging/Python Compilers "
          "Networks Databases Robots Browsers; track cat AI|Security|Web|Data; minutes int 15..90 (duration in minutes)"
          "; scheduled date 2024..2024 (scheduled date); speaker_id fk speakers; room fk rooms"),
        T("speakers", "speaker", 10, "speaker_id key; name label person; employer cat Acme|Globex|Initech|Umbrella "
          "(company); talks_given int? 1..50"),
        T("rooms", "room", 5, "room_id key; room_name label Aurora|Borealis|Cedar|Delta|Echo; wing cat East|West"
          "; capacity int 20..400")),
    _db("farm",
        T("harvests", "harvest", 30, "harvest_id key; lot label LOT-{n}; crop cat Wheat|Barley|Maize|Oats"
          "; tonnes real 1.0..90.0 (yield in tonnes); harvested date 2020..2023 (harvest date); field_id fk fields"),
        T("fields", "field", 8, "field_id key; field_name label Long Acre|Mill Field|Top Meadow|Brook Side|Old Orchard|"
          "Stone Close|Church Field|Low Ground; soil cat Clay|Loam|Sand; hectares real 2.0..80.0 (area in hectares)"
          "; farm_id fk farms"),
        T("farms", "farm", 4, "farm_id key; farm_name label Hill Farm|Oak Farm|Ash Farm|Vale Farm; county cat Kent|"
          "Devon; acquired int 1950..2015 (year acquired)")),
    _db("ticketing",
        T("tickets", "ticket", 30, "ticket_id key; seat label A B C D E F/1 2 3 4 5 6 7 8 (seat)"
          "; tier cat Standard|VIP|Student (ticket tier); price real 10.00..250.00; sold_on date 2024..2024 "
          "(sale date); event_id fk events"),
        T("events", "event", 8, "event_id key; event_name label Spring Gala|Jazz Night|Opera Week|Folk Fest|Rock Live|"
          "Ballet Evening|Choir Concert|Comedy Night; genre cat Music|Theatre|Comedy; starts date 2024..2024 "
          "(start date); venue_id fk venues"),
        T("venues", "venue", 4, "venue_id key; venue label Royal Hall|Town Arena|Park Stage|Old Theatre"
          "; city cat Bristol|York; seats int 300..9000")),
    _db("theatre",
        T("performances", "performance", 28, "perf_id key; perf_code label PF-{n} (performance code); house cat "
          "Full|Half|Sparse (audience size); takings real 200.0..20000.0 (box office takings); staged_on date "
          "2024..2024 (performance date); production fk productions"),
        T("productions", "production", 8, "production_id key; play label Hamlet|Medea|Ghosts|Tartuffe|Phedre|Volpone|"
          "Woyzeck|Candida; genre cat Tragedy|Comedy|Satire; premiere date 1990..2023 (premiere date)"
          "; written_by fk playwrights (playwright)"),
        T("playwrights", "playwright", 5, "playwright_id key; pen_name label person (pen name); century cat "
          "Seventeenth|Nineteenth|Twentieth")),
    _db("bikes",
        T("rentals", "rental", 30, "rental_id key; ride_ref label R-{n} (ride reference); pass_type cat Casual|"
          "Monthly|Annual (pass type); minutes_used int 3..240 (ride minutes); rented_on date 2024..2024 "
          "(rental date); bike fk bicycles; start_station fk stations (start station)"),
        T("bicycles", "bicycle", 8, "frame_no code FR-{n}; brand label Vento|Rapido|Cirrus|Strada|Mistral|Sirocco|"
          "Zephyr|Levante; bike_kind cat Road|Electric|Cargo (bike type); battery_wh int? 250..750 (battery capacity)"),
        T("stations", "station", 6, "station_id key; station label Quay Street|Park Gate|Old Market|Canal Side|"
          "Union Square|Mill Lane; district cat Centre|Docks|Heights; docks int 8..40 (number of docks)")),
    _db("newsroom",
        T("stories", "story", 28, "story_id key; headline label Storm Budget Derby Strike Heatwave Flood/Warning "
          "Vote Report Latest Review; section cat Politics|Sport|Business|Culture; word_count int 150..3000 (word count)"
          "; filed_on date 2024..2024 (filing date); byline fk reporters (reporter)", nouns="stories"),
        T("reporters", "reporter", 8, "reporter_id key; reporter label person; beat cat Courts|Health|Transport|"
          "Education; hired_year int 1995..2023 (year hired); desk_code fk desks (desk)"),
        T("desks", "desk", 4, "desk_code code NEWS|SPRT|BIZZ|ARTS; desk label News Desk|Sports Desk|Business Desk|"
          "Arts Desk; floor_level int 1..9 (floor)")),
    # --- four tables, with a link table for a many-to-many relation ----------------------------------
    _db("university",
        T("students", "student", 24, "student_id key; name label person; country cat Chile|Kenya|Vietnam|Poland"
          "; enrolled date 2019..2023 (enrolment date)"),
        T("courses", "course", 10, "course_id key; title label Algebra|Botany|Chemistry|Drama|Ethics|French|Geology|"
          "History|Law|Logic; dept cat Science|Arts|Humanities (department); credits int 1..12"
          "; instructor_id fk instructors"),
        T("enrollments", "enrollment", 40, "student_id fk students; course_id fk courses; grade int 40..100",
          verb="are enrolled in"),
        T("instructors", "instructor", 6, "instructor_id key; name label person; rank cat Lecturer|Professor|Reader"
          "; hired date 1995..2020 (hire date)")),
    _db("films",
        T("actors", "actor", 16, "actor_id key; name label person; born date 1940..2000 (birth date)"
          "; agent text? person"),
        T("films", "film", 20, "film_id key; title label Dark Last Grand Cold Bright/Harbour Witness Frontier Garden; "
          "genre cat Drama|Comedy|Thriller|Western; release_year int 1970..2023 (release year)"
          "; box_office real 1.0..900.0 (box office in millions); director_id fk directors"),
        T("casting", "casting", 40, "actor_id fk actors; film_id fk films; billing int 1..60 (billing position)",
          nouns="castings", verb="appear in"),
        T("directors", "director", 6, "director_id key; name label person; country cat France|Korea|Mexico|Italy")),
    _db("kitchen",
        T("dishes", "dish", 16, "dish_id key; dish label Baked Grilled Fried Stuffed/Pepper Trout Tofu Squash"
          "; course cat Starter|Main|Dessert; price real 4.50..32.00; chef_id fk chefs"),
        T("ingredients", "ingredient", 14, "ingredient_id key; ingredient label Garlic|Basil|Lemon|Chili|Ginger|Thyme|"
          "Butter|Cream|Honey|Saffron|Mint|Fennel|Capers|Sesame; supplier cat Farmgate|Greenleaf|Spicehouse"
          "; cost_per_kg real 1.00..90.00 (cost per kilo)"),
        T("dish_ingredients", "dish ingredient", 40, "dish_id fk dishes; ingredient_id fk ingredients"
          "; grams int 2..400 (quantity in grams)", verb="use"),
        T("chefs", "chef", 5, "chef_id key; name label person; station cat Grill|Pastry|Sauce")),
    _db("consultancy",
        T("consultants", "consultant", 20, "consultant_no key; full_name label person; grade cat Junior|Senior|"
          "Principal; day_rate int 300..1500 (day rate); joined date 2010..2024 (join date)"),
        T("projects", "project", 12, "project_id key; codename label Falcon|Granite|Harbor|Indigo|Juniper|Kestrel|"
          "Lantern|Mosaic|Nimbus|Onyx|Pioneer|Quartz; sector cat Energy|Banking|Health|Retail; budget int "
          "50000..900000; deadline date 2024..2026; client_id fk clients (client)"),
        T("assignments", "assignment", 36, "consultant_no fk consultants; project_id fk projects"
          "; hours int 5..400 (hours booked)", verb="work on"),
        T("clients", "client", 6, "client_id key; client_name label Altia|Brightway|Corvus|Daltek|Elmore|Fintra"
          "; country cat Spain|Sweden|Ireland")),
    _db("lending",
        T("members", "member", 20, "member_no key; name label person; district cat Old Town|Riverside|Uptown"
          "; joined date 2010..2024 (join date)"),
        T("titles", "book", 16, "title_id key; title label Salt Bone Glass Paper/Road Kingdom Harvest Island"
          "; subject cat Travel|History|Fiction|Cooking; pages int 90..800; branch_id fk branches"),
        T("loans", "loan", 40, "member_no fk members; title_id fk titles; borrowed date 2023..2024 (loan date)"
          "; returned date? 2023..2024 (return date)", verb="borrowed"),
        T("branches", "branch", 4, "branch_id key; branch label Central|Northside|Harbour|Hillview"
          "; opening_hours int 30..70 (weekly opening hours)")),
    _db("choir",
        T("singers", "singer", 18, "singer_id key; name label person; voice cat Soprano|Alto|Tenor|Bass (voice type)"
          "; since int 1990..2023 (member since)"),
        T("concerts", "concert", 10, "concert_id key; programme label Winter Lights|Easter Mass|Summer Songs|Requiem|"
          "Carols|Folk Roots|Bach Night|Gospel|Spirituals|Finale; performed date 2022..2024 (performance date)"
          "; ticket_price real 5.00..60.00 (ticket price); hall_id fk halls"),
        T("performances", "performance", 36, "singer_id fk singers; concert_id fk concerts; solo_minutes int? 1..40", verb="sang in"),
        T("halls", "hall", 4, "hall_id key; hall label St Mary|Guildhall|Corn Exchange|Assembly Rooms"
          "; city cat Bath|Ely; capacity int 120..1500")),
    _db("marathon",
        T("runners", "runner", 20, "bib key; runner label person; age_group cat Open|Veteran|Junior (age group)"
          "; club_ref fk clubs (club)"),
        T("races", "race", 8, "race_id key; race label City Marathon|Coastal Ten|Hill Half|Night Run|Forest Trail|"
          "River Relay|Park Dash|Lake Loop; surface cat Road|Trail|Track; length_miles real 3.1..26.2 "
          "(length in miles); run_on date 2023..2024 (race date)"),
        T("results", "result", 36, "runner_bib fk runners; race_key fk races; finish_minutes int 15..400 "
          "(finishing time in minutes)", verb="ran in"),
        T("clubs", "club", 5, "club_key key; club label Harriers|Striders|Pacers|Athletic|Road Runners"
          "; founded_in int 1890..2015 (founding year)")),
    # --- held out: test split only; new domains, new column names, new layouts ------------------------
    _db("volcanoes",
        T("volcanoes", "volcano", 22, "volcano_no key; designation label Mauna Pico Nevado Cerro Monte/Alto Rojo Negro "
          "Blanco Verde; setting cat Rift|Arc|Hotspot|Caldera (tectonic setting); elevation int 300..6900"
          "; summit_temp real 100.0..1200.0 (summit temperature); last_erupted date? 1800..2023 (last eruption)"
          "; monitored_since date 1950..2015 (monitoring start date)", nouns="volcanoes"), heldout=True),
    _db("vineyard",
        T("wines", "wine", 24, "wine_ref code W-{n}; cuvee label Grand Petit Vieux Clos Haut/Rouge Blanc Reserve Sec "
          "Doux (cuvee); grape cat Merlot|Syrah|Riesling|Malbec (grape variety); vintage int 1990..2022"
          "; abv real 11.0..15.5 (alcohol by volume); tasting_note text? Oaky|Floral|Jammy|Mineral (tasting note)"
          "; estate_ref fk estates (estate)"),
        T("estates", "estate", 6, "estate_ref key; estate label Chateau Vert|Bodega Sol|Quinta Alta|Weingut Berg|"
          "Domaine Roux|Tenuta Mare; appellation cat Rioja|Mosel|Douro; hectares real 2.0..90.0 (area in hectares)"),
        heldout=True),
    _db("observatory",
        T("observations", "observation", 28, "obs_no key; target label Vega Rigel Deneb Altair Polaris Sirius "
          "Castor/A B C D (target); band cat U|B|V|R (filter band); exposure_s real 1.0..600.0 (exposure time)"
          "; observed_on date 2021..2023 (observation date); seeing real? 0.50..3.00; scope fk telescopes (telescope)"),
        T("telescopes", "telescope", 5, "scope_no key; callsign label Hale|Keck|Gemini|Lowell|Subaru"
          "; site cat Atacama|La Palma|Mauna Kea; aperture_m real 0.5..10.0 (aperture)"), heldout=True),
    _db("parcels",
        T("parcels", "parcel", 28, "tracking_no code TRK{n}X; recipient label person; service cat Standard|Express|"
          "Freight (service level); weight_g int 50..30000 (weight in grams); declared_value real? 5.0..500.0 "
          "(declared value); posted_on date 2024..2024 (posting date); hub fk hubs"),
        T("hubs", "hub", 6, "hub_code code AMS|LYS|MUC|VIE|WAW|PRG; hub_city label Amsterdam|Lyon|Munich|Vienna|"
          "Warsaw|Prague (city); zone cat West|Central|East"), heldout=True),
    _db("ferries",
        T("sailings", "sailing", 30, "sailing_no key; voyage label V-{n}; sea_state cat Calm|Moderate|Rough"
          "; passengers int 20..900 (passenger count); departs_on date 2024..2024 (departure date)"
          "; vessel_ref fk vessels (vessel); route_ref fk routes (route)"),
        T("vessels", "vessel", 6, "vessel_ref key; hull_name label Sea Lark|North Star|Island Queen|Tern|Bright Wave|"
          "Orca; flag cat Malta|Panama|Norway (flag state); tonnage int 500..30000 (gross tonnage)"
          "; refitted_on date? 1995..2020 (refit date)"),
        T("routes", "route", 5, "route_ref key; crossing label Harbour Run|Outer Isles|Strait Link|Bay Shuttle|"
          "Cape Loop; nautical_miles real 5.0..300.0 (distance in nautical miles)"), heldout=True),
    _db("archive",
        T("manuscripts", "manuscript", 26, "ms_no key; shelfmark label MS-{n}; script cat Uncial|Gothic|Caroline|"
          "Insular (script style); folios int 10..400 (number of folios); acquired_on date 1850..2000 "
          "(acquisition date); scribe_no fk scribes (scribe)"),
        T("scribes", "scribe", 8, "scribe_no key; moniker label Brother Anselm|Sister Hild|Master Odo|Brother Bede|"
          "Sister Ita|Master Wido|Brother Notker|Sister Gisla; active_from int 800..1400 (first active year)"
          "; abbey_no fk abbeys (abbey)"),
        T("abbeys", "abbey", 4, "abbey_no key; abbey label Cluny|Fulda|Jarrow|Monte Cassino; monastic_order cat "
          "Benedictine|Cistercian; founded_year int 500..1200 (founding year)"), heldout=True),
    _db("esports",
        T("gamers", "gamer", 20, "gamer_uid key; handle label Zed Nyx Vox Kai Rook/Prime Nova Byte Storm"
          "; main_role cat Tank|Support|Carry|Scout (role); elo int 900..2800 (elo rating); coach text? person; signed_on date 2019..2024 "
          "(signing date); squad_uid fk squads (squad)"),
        T("squads", "squad", 6, "squad_uid key; squad label Night Owls|Iron Wolves|Solar Flare|Cold Snap|Red Comets|"
          "Deep Blue; league cat Pro|Challenger; prize_pool real 1000.0..90000.0 (prize pool)"),
        T("tournaments", "tournament", 8, "event_uid key; event_title label Winter Cup|Spring Open|Summer Clash|"
          "Autumn Major|Iron Cup|Neon Series|Arctic Open|Desert Masters; tier cat S|A|B; held_on date 2023..2024 "
          "(date)"),
        T("entries", "entry", 30, "gamer_uid fk gamers; event_uid fk tournaments; placement int 1..64"
          "; prize_won real? 100.0..9000.0 (prize won)", nouns="entries", verb="competed in"), heldout=True),
    _db("apiary",
        T("inspections", "inspection", 30, "inspection_no key; visit_code label INSP-{n} (visit code); brood cat "
          "Solid|Spotty|Absent (brood pattern); mites_per_100 real 0.0..12.0 (mites per 100 bees); inspected_on date "
          "2023..2024 (inspection date); hive_no fk hives (hive)"),
        T("hives", "hive", 10, "hive_no key; nickname label Amber|Buzz|Clover|Daisy|Ember|Fern|Goldie|Heather|Iris|Juno"
          "; hive_type cat Langstroth|Warre|Top bar (hive type); frames int 5..20"
          "; requeened_on date? 2019..2024 (requeening date); apiary_no fk apiaries (apiary)"),
        T("apiaries", "apiary", 4, "apiary_no key; apiary label Orchard Yard|Heath Yard|Roof Yard|Meadow Yard"
          "; terrain cat Urban|Rural; keeper_no fk keepers (beekeeper)", nouns="apiaries"),
        T("keepers", "beekeeper", 3, "keeper_no key; keeper label person; certified date 2005..2022 "
          "(certification date)"), heldout=True),
)
DATABASE_BY_ID = {db.db_id: db for db in DATABASES}

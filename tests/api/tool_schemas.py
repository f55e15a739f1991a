"""Twenty function tools and twenty response schemas, each with a question that fits it: nested
objects, enums, arrays, bounded numbers, patterns and required fields. The tests force each
one on SmolLM2-135M and check the output against the schema."""


def obj(properties, required=None, **extra):
    return {"type": "object", "properties": properties, "required": list(required or properties), **extra}


STR = {"type": "string", "maxLength": 40}
CURRENCY = {"type": "string", "enum": ["USD", "EUR", "GBP", "JPY"]}

# (function name, description, parameters, user question)
TOOLS = [
    ("get_weather", "Current weather in a city", obj({"city": STR, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]), "What's the weather in Paris in celsius?"),
    ("set_alarm", "Set an alarm", obj({"hour": {"type": "integer", "minimum": 0, "maximum": 23}, "minute": {"type": "integer", "minimum": 0, "maximum": 59}}), "Wake me up at 7:30."),
    ("book_flight", "Book a flight", obj({"origin": STR, "destination": STR, "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}), "Book a flight from Boston to Denver for two people."),
    ("create_event", "Create a calendar event", obj({"title": STR, "attendees": {"type": "array", "items": STR, "minItems": 1, "maxItems": 4}}), "Set up a lunch with Ana and Bo."),
    ("order_pizza", "Order a pizza", obj({"size": {"type": "string", "enum": ["small", "medium", "large"]}, "toppings": {"type": "array", "items": {"type": "string", "enum": ["cheese", "ham", "mushroom", "olive", "pepper"]}, "maxItems": 3}}), "A large pizza with ham and olives, please."),
    ("convert_currency", "Convert money", obj({"amount": {"type": "number", "minimum": 0, "maximum": 1000000}, "source": CURRENCY, "target": CURRENCY}), "How much is 250 dollars in euros?"),
    ("search_products", "Search the shop", obj({"query": STR, "filters": obj({"min_price": {"type": "number", "minimum": 0}, "max_price": {"type": "number", "maximum": 10000}, "in_stock": {"type": "boolean"}})}, ["query"]), "Find running shoes under 100 dollars that are in stock."),
    ("send_email", "Send an email", obj({"to": STR, "subject": STR, "priority": {"type": "string", "enum": ["low", "normal", "high"]}}, ["to", "subject"]), "Email bob@example.com that the meeting moved, high priority."),
    ("create_user", "Create an account", obj({"name": STR, "age": {"type": "integer", "minimum": 0, "maximum": 150}, "address": obj({"city": STR, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})}, ["name", "address"]), "Sign up Carla, 34, living in Austin 73301."),
    ("rate_movie", "Rate a movie", obj({"title": STR, "stars": {"type": "integer", "minimum": 1, "maximum": 5}}), "Give Casablanca five stars."),
    ("add_todos", "Add items to the todo list", obj({"items": {"type": "array", "items": obj({"task": STR, "done": {"type": "boolean"}}), "minItems": 1, "maxItems": 3}}), "Add 'buy milk' and 'call mom' to my list."),
    ("set_thermostat", "Set the thermostat", obj({"temperature": {"type": "number", "minimum": 10, "maximum": 30}, "mode": {"type": "string", "enum": ["heat", "cool", "auto"]}}), "Heat the house to 22 degrees."),
    ("translate", "Translate text", obj({"text": STR, "target_language": {"type": "string", "enum": ["fr", "de", "es", "it"]}}), "Translate 'good morning' to German."),
    ("schedule_meeting", "Schedule a meeting", obj({"participants": {"type": "array", "items": obj({"name": STR, "email": STR}), "minItems": 1, "maxItems": 3}, "duration_minutes": {"type": "integer", "minimum": 15, "maximum": 240}}), "Schedule 30 minutes with Dana (dana@example.com)."),
    ("calculate", "Do arithmetic", obj({"operation": {"type": "string", "enum": ["add", "subtract", "multiply", "divide"]}, "a": {"type": "number"}, "b": {"type": "number"}}), "What is 12 times 7?"),
    ("log_workout", "Log a workout", obj({"activity": {"type": "string", "enum": ["run", "swim", "bike", "walk"]}, "minutes": {"type": "integer", "minimum": 1, "maximum": 300}, "calories": {"type": "number", "minimum": 0, "maximum": 5000}}, ["activity", "minutes"]), "I ran for 45 minutes and burned 400 calories."),
    ("get_stock_price", "Latest stock price", obj({"symbol": {"type": "string", "pattern": "^[A-Z]{1,5}$"}}), "What is Apple's stock price?"),
    ("plan_trip", "Plan a trip", obj({"destination": STR, "days": {"type": "integer", "minimum": 1, "maximum": 30}, "budget": obj({"amount": {"type": "number", "minimum": 0}, "currency": CURRENCY})}), "Plan 5 days in Tokyo for 2000 dollars."),
    ("update_settings", "Change app settings", obj({"dark_mode": {"type": "boolean"}, "font_size": {"type": "integer", "minimum": 8, "maximum": 32}, "language": {"type": "string", "enum": ["en", "fr", "de"]}}, ["dark_mode"]), "Turn on dark mode and make the font 16."),
    ("lookup_order", "Look up an order", obj({"order_id": {"type": "integer", "minimum": 1}, "include": {"type": "array", "items": {"type": "string", "enum": ["items", "shipping", "payment"]}, "maxItems": 3}}), "Where is order 1234? Include shipping."),
]

# (schema name, schema, user question)
FORMATS = [
    ("city", obj({"name": STR, "country": STR, "population": {"type": "integer", "minimum": 0}}), "Describe Paris."),
    ("person", obj({"name": STR, "age": {"type": "integer", "minimum": 0, "maximum": 120}}), "Invent a person."),
    ("color", obj({"color": {"type": "string", "enum": ["red", "green", "blue"]}}), "What color is the sky?"),
    ("answer", obj({"answer": {"type": "boolean"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}), "Is water wet?"),
    ("recipe", obj({"dish": STR, "ingredients": {"type": "array", "items": STR, "minItems": 1, "maxItems": 4}}), "Give me a pancake recipe."),
    ("book", obj({"title": STR, "author": obj({"first": STR, "last": STR}), "year": {"type": "integer", "minimum": 1400, "maximum": 2030}}), "Tell me about a famous novel."),
    ("point", obj({"x": {"type": "number", "minimum": -100, "maximum": 100}, "y": {"type": "number", "minimum": -100, "maximum": 100}}), "Pick a point on a plane."),
    ("sentiment", obj({"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}, "score": {"type": "number", "minimum": -1, "maximum": 1}}), "How does 'I love this!' feel?"),
    ("pet", obj({"species": {"type": "string", "enum": ["cat", "dog", "bird", "fish"]}, "name": STR, "age": {"type": "integer", "minimum": 0, "maximum": 40}}, ["species", "name"]), "Describe a pet."),
    ("shopping", obj({"items": {"type": "array", "items": obj({"item": STR, "qty": {"type": "integer", "minimum": 1, "maximum": 12}}), "minItems": 1, "maxItems": 3}}), "Make a short shopping list."),
    ("date", obj({"year": {"type": "integer", "minimum": 1900, "maximum": 2100}, "month": {"type": "integer", "minimum": 1, "maximum": 12}, "day": {"type": "integer", "minimum": 1, "maximum": 31}}), "When did the Apollo 11 land?"),
    ("planet", obj({"name": {"type": "string", "enum": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]}, "moons": {"type": "integer", "minimum": 0, "maximum": 200}}), "Which planet is largest?"),
    ("tags", obj({"tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2,12}$"}, "minItems": 1, "maxItems": 3}}), "Tag a photo of a beach."),
    ("rgb", obj({"r": {"type": "integer", "minimum": 0, "maximum": 255}, "g": {"type": "integer", "minimum": 0, "maximum": 255}, "b": {"type": "integer", "minimum": 0, "maximum": 255}}), "What is orange in RGB?"),
    ("contact", obj({"name": STR, "phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}, "email": STR}, ["name", "phone"]), "Make up a contact card."),
    ("grade", obj({"student": STR, "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "minItems": 1, "maxItems": 3}, "passed": {"type": "boolean"}}), "Grade a student."),
    ("weather", obj({"summary": {"type": "string", "enum": ["sunny", "cloudy", "rainy", "snowy"]}, "high": {"type": "number", "minimum": -50, "maximum": 60}, "low": {"type": "number", "minimum": -60, "maximum": 50}}), "Forecast for tomorrow."),
    ("company", obj({"name": STR, "founded": {"type": "integer", "minimum": 1800, "maximum": 2025}, "hq": obj({"city": STR, "country": STR})}), "Describe a tech company."),
    ("vote", {"type": "object", "properties": {"choice": {"type": "string", "enum": ["yes", "no", "abstain"]}}, "required": ["choice"], "additionalProperties": False}, "Should we adopt the plan?"),
    ("measurement", obj({"value": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}, "unit": {"type": "string", "enum": ["cm", "m", "km"]}}), "How tall is a door?"),
]

"""Online learners and rankers (DESIGN §5): small classes in River's shape, fed by the flow and the API."""

"""The Feast project of Kairos (entities, feature views, push sources)."""

"""Remote model APIs: OpenAI-compatible presets and Replicate, behind one interface."""

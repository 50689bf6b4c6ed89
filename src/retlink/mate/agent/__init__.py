"""The MATE binding agent: a LangGraph graph whose tools parse the scene and bind attributes."""

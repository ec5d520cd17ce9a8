from sample_app.server import main

main()
